package interop

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/dtm-labs/client/dtmgrpc"
	"github.com/dtm-labs/client/workflow"
	"github.com/dtm-labs/client/workflow/wfpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
)

func sqlTransfer(user int64, amount int) map[string]interface{} {
	return map[string]interface{}{"user": user, "amount": amount}
}

// grpcXaBusi serves TransOutXa and TransInXa through dtmgrpc.XaLocalTransaction: op=action runs the business SQL
// inside an XA branch and registers it over gRPC; op=commit|rollback (the server's phase 2) finishes it.
func grpcXaBusi(t *testing.T, conf dtmcli.DBConf) *grpcBusi {
	b := newGrpcBusi(t)
	for method, sign := range map[string]int{"TransOutXa": -1, "TransInXa": 1} {
		sign := sign
		b.on(method, func(ctx context.Context, payload []byte) error {
			err := dtmgrpc.XaLocalTransaction(ctx, conf, func(db *sql.DB, _ *dtmgrpc.XaGrpc) error {
				req, err := decodeTransfer(payload)
				if err != nil {
					return err
				}
				user, amount := int64(req.Fields["user"].GetNumberValue()), int(req.Fields["amount"].GetNumberValue())
				return adjust(db, user, sign*amount)
			})
			return grpcResult(t, "xa", err)
		})
	}
	return b
}

func grpcPhase2Calls(b *grpcBusi, gid string) []string {
	var out []string
	for _, s := range b.sequence(gid) {
		if !strings.HasSuffix(s, ",action)") {
			out = append(out, s)
		}
	}
	return out
}

// XaGlobalTransaction over gRPC, with RMs using XaLocalTransaction on MariaDB.
func TestGrpcXaMariaDB(t *testing.T) {
	t.Parallel()
	dtm, conf := dtmGRPC(t), mariaDBConf(t)
	dtmURL(t)
	db := openBusiDB(t, conf)
	b := grpcXaBusi(t, conf)
	for _, tc := range []struct {
		name            string
		inAmount        int
		status          string
		statuses        string
		wantOut, wantIn int
		phase2          []string
	}{
		{"normal", 30, "succeed", "psps", startBalance - 30, startBalance + 30,
			[]string{"TransOutXa(01,commit)", "TransInXa(02,commit)"}},
		// TransIn refuses to overdraw its account: it never registers, TransOut's XA branch is rolled back.
		{"rollback", -startBalance - 1, "failed", "sp", startBalance, startBalance,
			[]string{"TransOutXa(01,rollback)"}},
	} {
		gid := grpcGid(t, dtm)
		out, in := newAccounts(t, db)
		err := dtmgrpc.XaGlobalTransaction2(dtm, gid, func(xa *dtmgrpc.XaGrpc) { xa.Context = bounded(t) },
			func(xa *dtmgrpc.XaGrpc) error {
				if err := xa.CallBranch(transfer(sqlTransfer(out, 30)), b.url("TransOutXa"), &emptypb.Empty{}); err != nil {
					return err
				}
				return xa.CallBranch(transfer(sqlTransfer(in, tc.inAmount)), b.url("TransInXa"), &emptypb.Empty{})
			})
		if tc.status == "succeed" && err != nil {
			t.Fatalf("%s: XaGlobalTransaction: %v", tc.name, err)
		}
		if tc.status == "failed" && !errors.Is(dtmgrpc.GrpcError2DtmError(err), dtmcli.ErrFailure) {
			t.Fatalf("%s: XaGlobalTransaction: got %v, want an Aborted (FAILURE) error", tc.name, err)
		}
		q := waitStatus(t, gid, tc.status)
		assertEqual(t, tc.name+": trans_type", q.Transaction.TransType, "xa")
		assertEqual(t, tc.name+": branch statuses", q.statuses(), tc.statuses)
		waitFor(t, tc.name+": phase-2 calls", func() bool { return len(grpcPhase2Calls(b, gid)) >= len(tc.phase2) })
		assertSeq(t, tc.name+": phase-2 calls", grpcPhase2Calls(b, gid), tc.phase2)
		for _, c := range b.of(gid) {
			assertEqual(t, tc.name+": trans_type", c.TransType, "xa")
			if c.Op == "action" {
				assertEqual(t, tc.name+": phase2_url", c.meta("dtm-phase2_url"), b.url(c.Method))
			} else {
				assertEqual(t, tc.name+": phase-2 payload", string(c.Payload), "")
			}
		}
		assertEqual(t, tc.name+": out balance", accountBalance(t, db, out), tc.wantOut)
		assertEqual(t, tc.name+": in balance", accountBalance(t, db, in), tc.wantIn)
		assertEqual(t, tc.name+": prepared XA transactions", strings.Join(preparedXids(t, db, gid), ","), "")
	}
}

// grpcCallbacks records the server's calls to the workflow.Workflow service (the resume callback); the payload
// recorded is the WorkflowData's Data.
var grpcCallbacks = &grpcLog{}

// initGrpcWorkflows serves workflow.Workflow on a loopback port for the server's resume callbacks and points
// the workflow engine at DTM_GRPC; without DTM_GRPC it does nothing. It returns what stops it.
func initGrpcWorkflows() (stop func()) {
	dtm := os.Getenv("DTM_GRPC")
	if dtm == "" {
		return func() {}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	srv := grpc.NewServer(grpc.UnaryInterceptor(recordCallback))
	workflow.InitGrpc(dtm, lis.Addr().String(), srv)
	go func() { _ = srv.Serve(lis) }()
	return func() {
		srv.Stop()
		closeWorkflowConns()
	}
}

func recordCallback(ctx context.Context, req interface{}, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (interface{}, error) {
	var data []byte
	if wd, ok := req.(*wfpb.WorkflowData); ok {
		data = wd.Data
	}
	grpcCallbacks.add(newGrpcCall(ctx, info.FullMethod, data))
	return handler(ctx, req)
}

// workflowConns holds a connection per busi address; a workflow's compensations run after its function
// returns, so the function cannot close what it dialled.
var workflowConns sync.Map

// workflowConn is a connection whose calls the workflow engine records: workflow.Interceptor is how the SDK
// turns gRPC calls into workflow branches.
func workflowConn(addr string) (*grpc.ClientConn, error) {
	if conn, ok := workflowConns.Load(addr); ok {
		return conn.(*grpc.ClientConn), nil
	}
	conn, err := grpc.Dial(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(workflow.Interceptor))
	if err != nil {
		return nil, err
	}
	if earlier, loaded := workflowConns.LoadOrStore(addr, conn); loaded {
		_ = conn.Close()
		return earlier.(*grpc.ClientConn), nil
	}
	return conn, nil
}

func closeWorkflowConns() {
	workflowConns.Range(func(_, conn interface{}) bool {
		_ = conn.(*grpc.ClientConn).Close()
		return true
	})
}

// callBusi calls busi.Busi/<method> at addr with the transfer request, inside the workflow of ctx.
func callBusi(ctx context.Context, addr, method string) error {
	conn, err := workflowConn(addr)
	if err != nil {
		return err
	}
	return conn.Invoke(ctx, "/"+busiService+"/"+method, transfer(grpcAmount), &emptypb.Empty{})
}

// twoGrpcSteps: TransOut then TransIn over gRPC, each with its compensation.
func twoGrpcSteps(wf *workflow.Workflow, data []byte) error {
	addr := busiOf(data)
	for _, name := range []string{"TransOut", "TransIn"} {
		revert := name + "Revert"
		wf.NewBranch().OnRollback(func(*dtmcli.BranchBarrier) error {
			return callBusi(wf.Context, addr, revert)
		})
		if err := callBusi(wf.Context, addr, name); err != nil {
			return err
		}
	}
	return nil
}

func registerGrpcWorkflows() {
	must(workflow.Register("grpc_wf_success", twoGrpcSteps, noEarlyResume))
	must(workflow.Register("grpc_wf_rollback", twoGrpcSteps, noEarlyResume))
	must(workflow.Register("grpc_wf_ongoing", twoGrpcSteps, func(wf *workflow.Workflow) { wf.RetryInterval = 1 }))
}

func grpcInput(t *testing.T, b *grpcBusi) []byte {
	t.Helper()
	data, err := json.Marshal(wfInput{Busi: b.addr})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func assertWorkflowCalls(t *testing.T, b *grpcBusi, gid string) {
	t.Helper()
	for _, c := range b.of(gid) {
		assertEqual(t, c.Method+": trans_type", c.TransType, "workflow")
		samePayload(t, c.Method, c.Payload, transfer(grpcAmount))
	}
}

func TestGrpcWorkflowSuccess(t *testing.T) {
	t.Parallel()
	dtm, b := dtmGRPC(t), newGrpcBusi(t)
	dtmURL(t)
	gid := grpcGid(t, dtm)
	if _, err := workflow.ExecuteCtx(bounded(t), "grpc_wf_success", gid, grpcInput(t, b)); err != nil {
		t.Fatalf("execute: %v", err)
	}
	q := query(t, gid)
	assertEqual(t, "status", q.status(), "succeed")
	assertEqual(t, "trans_type", q.Transaction.TransType, "workflow")
	assertSeq(t, "branches", q.rows(), []string{"01 action succeed", "02 action succeed"})
	assertSeq(t, "busi calls", b.sequence(gid), []string{"TransOut(01,action)", "TransIn(02,action)"})
	assertWorkflowCalls(t, b, gid)
}

// A step answering Aborted fails the workflow: the done step is compensated, the failure stored and replayed.
func TestGrpcWorkflowRollback(t *testing.T) {
	t.Parallel()
	dtm, b := dtmGRPC(t), newGrpcBusi(t)
	dtmURL(t)
	b.script("TransIn", codes.Aborted)
	gid := grpcGid(t, dtm)
	_, err := workflow.ExecuteCtx(bounded(t), "grpc_wf_rollback", gid, grpcInput(t, b))
	if !errors.Is(err, dtmcli.ErrFailure) {
		t.Fatalf("execute: got %v, want ErrFailure", err)
	}
	q := query(t, gid)
	assertEqual(t, "status", q.status(), "failed")
	assertSeq(t, "branches", q.rows(), []string{"01 action succeed", "02 action failed", "01 rollback succeed"})
	assertSeq(t, "busi calls", b.sequence(gid), []string{
		"TransOut(01,action)", "TransIn(02,action)", "TransOutRevert(01,rollback)",
	})
	assertWorkflowCalls(t, b, gid)
	if !strings.Contains(q.Transaction.RollbackReason, "busi answers Aborted") {
		t.Fatalf("rollback_reason %q does not hold the step's status message", q.Transaction.RollbackReason)
	}
	// A failed workflow executed again returns the stored failure without running.
	if _, err := workflow.ExecuteCtx(bounded(t), "grpc_wf_rollback", gid, grpcInput(t, b)); !errors.Is(err, dtmcli.ErrFailure) {
		t.Fatalf("re-execute: got %v, want ErrFailure", err)
	}
	assertEqual(t, "busi calls after re-execute", len(b.of(gid)), 3)
}

// An ONGOING (FailedPrecondition) step leaves the workflow prepared; the server resumes it through
// workflow.Workflow/Execute over gRPC until it finishes.
func TestGrpcWorkflowOngoingResumedByCallback(t *testing.T) {
	t.Parallel()
	dtm, b := dtmGRPC(t), newGrpcBusi(t)
	dtmURL(t)
	b.script("TransOut", codes.FailedPrecondition, codes.FailedPrecondition)
	gid := grpcGid(t, dtm)
	data := grpcInput(t, b)
	if _, err := workflow.ExecuteCtx(bounded(t), "grpc_wf_ongoing", gid, data); !errors.Is(err, dtmcli.ErrOngoing) {
		t.Fatalf("execute with an ONGOING step: got %v, want ErrOngoing", err)
	}
	q := waitStatus(t, gid, "succeed")
	assertSeq(t, "branches", q.rows(), []string{"01 action succeed", "02 action succeed"})
	assertSeq(t, "busi calls", b.sequence(gid), []string{
		"TransOut(01,action)", "TransOut(01,action)", "TransOut(01,action)", "TransIn(02,action)",
	})
	assertWorkflowCalls(t, b, gid)
	cbs := grpcCallbacks.of(gid)
	if len(cbs) < 2 {
		t.Fatalf("the server called the resume callback %d times, want 2 (ONGOING once, then done)", len(cbs))
	}
	for _, cb := range cbs {
		assertEqual(t, "callback method", cb.Method, "/workflow.Workflow/Execute")
		assertEqual(t, "callback op", cb.Op, "grpc_wf_ongoing")
		assertEqual(t, "callback branch_id", cb.BranchID, "00")
		assertEqual(t, "callback trans_type", cb.TransType, "workflow")
		assertEqual(t, "callback data", string(cb.Payload), string(data))
	}
}
