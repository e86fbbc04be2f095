package interop

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// The Go dtmgrpc SDK against the server's gRPC API (DTM_GRPC), with branches on a gRPC busi. Outcomes are read
// through the HTTP /query API (DTM_URL), which serves gRPC transactions as well.

var grpcAmount = map[string]interface{}{"amount": 30}

func transferSagaGrpc(t *testing.T, dtm string, b *grpcBusi, opts ...dtmgrpc.TransBaseOption) *dtmgrpc.SagaGrpc {
	saga := dtmgrpc.NewSagaGrpc(dtm, grpcGid(t, dtm), opts...).
		Add(b.url("TransOut"), b.url("TransOutRevert"), transfer(grpcAmount)).
		Add(b.url("TransIn"), b.url("TransInRevert"), transfer(grpcAmount))
	saga.Context = bounded(t)
	return saga
}

// stepOf is the saga step (0: TransOut, 1: TransIn) a busi method belongs to.
func stepOf(method string) int {
	if strings.HasPrefix(method, "TransIn") {
		return 1
	}
	return 0
}

// assertSagaCalls checks that every call says trans_type saga and carries its step's payload, byte for byte as
// the SDK submitted it.
func assertSagaCalls(t *testing.T, b *grpcBusi, saga *dtmgrpc.SagaGrpc) {
	t.Helper()
	for _, c := range b.of(saga.Gid) {
		assertEqual(t, c.Method+": trans_type", c.TransType, "saga")
		assertEqual(t, c.Method+": payload", string(c.Payload), string(saga.BinPayloads[stepOf(c.Method)]))
	}
}

func TestGrpcSagaNormal(t *testing.T) {
	t.Parallel()
	dtm, b := dtmGRPC(t), newGrpcBusi(t)
	headers := map[string]string{"x-busi-tenant": "tenant-7"}
	saga := transferSagaGrpc(t, dtm, b, dtmgrpc.WithBranchHeaders(headers))
	if err := saga.Submit(); err != nil {
		t.Fatalf("submit: %v", err)
	}
	q := waitStatus(t, saga.Gid, "succeed")
	assertEqual(t, "trans_type", q.Transaction.TransType, "saga")
	assertEqual(t, "branch statuses", q.statuses(), "psps")
	assertSeq(t, "busi calls", b.sequence(saga.Gid), []string{"TransOut(01,action)", "TransIn(02,action)"})
	assertSagaCalls(t, b, saga)
	for _, c := range b.of(saga.Gid) {
		assertEqual(t, c.Method+": branch header", c.meta("x-busi-tenant"), "tenant-7")
	}
}

// With WaitResult, Submit returns once the saga is final; a failed saga is an Aborted (FAILURE) error.
func TestGrpcSagaWaitResult(t *testing.T) {
	t.Parallel()
	dtm, b := dtmGRPC(t), newGrpcBusi(t)
	saga := transferSagaGrpc(t, dtm, b)
	saga.WaitResult = true
	if err := saga.Submit(); err != nil {
		t.Fatalf("submit: %v", err)
	}
	q := query(t, saga.Gid)
	assertEqual(t, "status right after submit", q.status(), "succeed")
	assertEqual(t, "branch statuses", q.statuses(), "psps")

	b.script("TransIn", codes.Aborted)
	failing := transferSagaGrpc(t, dtm, b)
	failing.WaitResult = true
	err := failing.Submit()
	if !errors.Is(dtmgrpc.GrpcError2DtmError(err), dtmcli.ErrFailure) {
		t.Fatalf("submit of a failing saga with WaitResult: got %v, want an Aborted (FAILURE) error", err)
	}
	q = query(t, failing.Gid)
	assertEqual(t, "status right after submit", q.status(), "failed")
	assertEqual(t, "branch statuses", q.statuses(), "sssf")
}

// Aborted from an action is FAILURE: the done steps are compensated in reverse order.
func TestGrpcSagaRollback(t *testing.T) {
	t.Parallel()
	dtm, b := dtmGRPC(t), newGrpcBusi(t)
	b.script("TransIn", codes.Aborted)
	saga := transferSagaGrpc(t, dtm, b)
	if err := saga.Submit(); err != nil {
		t.Fatalf("submit: %v", err)
	}
	q := waitStatus(t, saga.Gid, "failed")
	assertEqual(t, "branch statuses", q.statuses(), "sssf")
	if !strings.Contains(q.Transaction.RollbackReason, "busi answers Aborted") {
		t.Fatalf("rollback_reason %q does not hold the branch's status message", q.Transaction.RollbackReason)
	}
	assertSeq(t, "busi calls", b.sequence(saga.Gid), []string{
		"TransOut(01,action)", "TransIn(02,action)", "TransInRevert(02,compensate)", "TransOutRevert(01,compensate)",
	})
	assertSagaCalls(t, b, saga)
}

// Unavailable is neither SUCCESS nor FAILURE, and FailedPrecondition is ONGOING: both are retried until the
// branch succeeds, and nothing is compensated.
func TestGrpcSagaRetriesUntilSuccess(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		method  string
		answers []codes.Code
		calls   []string
	}{
		{"unavailable", "TransIn", []codes.Code{codes.Unavailable},
			[]string{"TransOut(01,action)", "TransIn(02,action)", "TransIn(02,action)"}},
		{"ongoing", "TransOut", []codes.Code{codes.FailedPrecondition, codes.FailedPrecondition},
			[]string{"TransOut(01,action)", "TransOut(01,action)", "TransOut(01,action)", "TransIn(02,action)"}},
	} {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dtm, b := dtmGRPC(t), newGrpcBusi(t)
			b.script(tc.method, tc.answers...)
			saga := transferSagaGrpc(t, dtm, b)
			saga.RetryInterval = 1 // Go DTM's server-wide interval cannot go under 10 s
			if err := saga.Submit(); err != nil {
				t.Fatalf("submit: %v", err)
			}
			q := waitStatus(t, saga.Gid, "succeed")
			assertEqual(t, "branch statuses", q.statuses(), "psps")
			assertSeq(t, "busi calls", b.sequence(saga.Gid), tc.calls)
			assertSagaCalls(t, b, saga)
		})
	}
}

// FAILURE ends only a saga's action: Aborted from a compensation or from a msg's action is retried like any other
// error. And Aborted with the message "ONGOING" (how DTM before v1.10 said ONGOING) is ONGOING.
func TestGrpcAbortedElsewhereIsRetried(t *testing.T) {
	t.Parallel()
	legacyOngoing := func(b *grpcBusi) {
		var answered atomic.Bool
		b.on("TransIn", func(context.Context, []byte) error {
			if answered.CompareAndSwap(false, true) {
				return status.Error(codes.Aborted, dtmcli.ResultOngoing)
			}
			return nil
		})
	}
	for _, tc := range []struct {
		name   string
		msg    bool
		setup  func(b *grpcBusi)
		status string
		calls  []string
	}{
		{"saga compensation", false, func(b *grpcBusi) {
			b.script("TransIn", codes.Aborted)
			b.script("TransOutRevert", codes.Aborted)
		}, "failed", []string{
			"TransOut(01,action)", "TransIn(02,action)", "TransInRevert(02,compensate)",
			"TransOutRevert(01,compensate)", "TransOutRevert(01,compensate)",
		}},
		{"msg action", true, func(b *grpcBusi) { b.script("TransIn", codes.Aborted) }, "succeed",
			[]string{"TransOut(01,action)", "TransIn(02,action)", "TransIn(02,action)"}},
		{"saga action saying ONGOING", false, legacyOngoing, "succeed",
			[]string{"TransOut(01,action)", "TransIn(02,action)", "TransIn(02,action)"}},
	} {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dtm, b := dtmGRPC(t), newGrpcBusi(t)
			tc.setup(b)
			var gid string
			var err error
			if tc.msg {
				msg := transferMsgGrpc(t, dtm, b)
				msg.RetryInterval = 1
				gid, err = msg.Gid, msg.Submit()
			} else {
				saga := transferSagaGrpc(t, dtm, b)
				saga.RetryInterval = 1
				gid, err = saga.Gid, saga.Submit()
			}
			if err != nil {
				t.Fatalf("submit: %v", err)
			}
			waitStatus(t, gid, tc.status)
			assertSeq(t, "busi calls", b.sequence(gid), tc.calls)
		})
	}
}

// Every branch call carries the transaction's request timeout as its deadline: a branch that outlives it is cut
// off and retried.
func TestGrpcSagaRequestTimeout(t *testing.T) {
	t.Parallel()
	dtm, b := dtmGRPC(t), newGrpcBusi(t)
	var hung atomic.Bool
	b.on("TransIn", func(ctx context.Context, _ []byte) error {
		if hung.CompareAndSwap(false, true) {
			select {
			case <-ctx.Done():
				// An error, not OK: our answer may race the caller's own deadline.
				return status.FromContextError(ctx.Err()).Err()
			case <-time.After(5 * time.Second):
			}
		}
		return nil
	})
	saga := transferSagaGrpc(t, dtm, b)
	saga.RequestTimeout = 1
	saga.RetryInterval = 1
	if err := saga.Submit(); err != nil {
		t.Fatalf("submit: %v", err)
	}
	waitStatus(t, saga.Gid, "succeed")
	assertSeq(t, "busi calls", b.sequence(saga.Gid), []string{"TransOut(01,action)", "TransIn(02,action)", "TransIn(02,action)"})
	for _, c := range b.of(saga.Gid) {
		// The grpc-timeout header is coarse (grpcio's has been seen 10 ms over): some slack above 1 s.
		if c.Timeout <= 0 || c.Timeout > 1250*time.Millisecond {
			t.Fatalf("%s: deadline %s away on arrival, want the 1 s request timeout", c.Method, c.Timeout)
		}
	}
}

func transferMsgGrpc(t *testing.T, dtm string, b *grpcBusi) *dtmgrpc.MsgGrpc {
	msg := dtmgrpc.NewMsgGrpc(dtm, grpcGid(t, dtm)).
		Add(b.url("TransOut"), transfer(grpcAmount)).
		Add(b.url("TransIn"), transfer(grpcAmount))
	msg.Context = bounded(t)
	return msg
}

// Prepare stores the msg without calling anything; Submit runs the branches in order.
func TestGrpcMsgPrepareSubmit(t *testing.T) {
	t.Parallel()
	dtm, b := dtmGRPC(t), newGrpcBusi(t)
	msg := transferMsgGrpc(t, dtm, b)
	if err := msg.Prepare(b.url("QueryPrepared")); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	q := query(t, msg.Gid)
	assertEqual(t, "status after prepare", q.status(), "prepared")
	assertEqual(t, "branch statuses after prepare", q.statuses(), "pp")
	assertEqual(t, "calls after prepare", len(b.of(msg.Gid)), 0)
	if err := msg.Submit(); err != nil {
		t.Fatalf("submit: %v", err)
	}
	q = waitStatus(t, msg.Gid, "succeed")
	assertEqual(t, "trans_type", q.Transaction.TransType, "msg")
	assertEqual(t, "branch statuses", q.statuses(), "ss")
	assertSeq(t, "busi calls", b.sequence(msg.Gid), []string{"TransOut(01,action)", "TransIn(02,action)"})
	for i, c := range b.of(msg.Gid) {
		assertEqual(t, c.Method+": trans_type", c.TransType, "msg")
		assertEqual(t, c.Method+": payload", string(c.Payload), string(msg.BinPayloads[i]))
	}
}

// A prepared msg whose submit never comes: after TimeoutToFail the server asks QueryPrepared over gRPC, and its
// answer decides (OK: submit, Aborted: fail, FailedPrecondition: ask again later).
func TestGrpcMsgCheckBack(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		answers []codes.Code
		status  string
		calls   []string
	}{
		{"committed", []codes.Code{codes.OK}, "succeed",
			[]string{"QueryPrepared(00,msg)", "TransOut(01,action)", "TransIn(02,action)"}},
		{"rolled back", []codes.Code{codes.Aborted}, "failed", []string{"QueryPrepared(00,msg)"}},
		{"ongoing, then committed", []codes.Code{codes.FailedPrecondition, codes.OK}, "succeed",
			[]string{"QueryPrepared(00,msg)", "QueryPrepared(00,msg)", "TransOut(01,action)", "TransIn(02,action)"}},
	} {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dtm, b := dtmGRPC(t), newGrpcBusi(t)
			b.script("QueryPrepared", tc.answers...)
			msg := transferMsgGrpc(t, dtm, b)
			// The first round comes after RetryInterval and must find the msg past TimeoutToFail: Go DTM does not
			// check back earlier, and puts the next round off by its server-wide interval (10 s).
			msg.TimeoutToFail = 1
			msg.RetryInterval = 2
			if err := msg.Prepare(b.url("QueryPrepared")); err != nil {
				t.Fatalf("prepare: %v", err)
			}
			waitStatus(t, msg.Gid, tc.status)
			assertSeq(t, "busi calls", b.sequence(msg.Gid), tc.calls)
			for _, c := range b.of(msg.Gid) {
				assertEqual(t, c.Method+": trans_type", c.TransType, "msg")
				if c.Method == "QueryPrepared" {
					assertEqual(t, "check-back payload", string(c.Payload), "")
				}
			}
		})
	}
}

// transferTccGrpc runs a TCC of two branches, TransOut then TransIn, each registered with its confirm and cancel.
func transferTccGrpc(t *testing.T, dtm string, b *grpcBusi) (string, error) {
	gid := grpcGid(t, dtm)
	err := dtmgrpc.TccGlobalTransaction2(dtm, gid, func(tcc *dtmgrpc.TccGrpc) { tcc.Context = bounded(t) },
		func(tcc *dtmgrpc.TccGrpc) error {
			for _, name := range []string{"TransOut", "TransIn"} {
				err := tcc.CallBranch(transfer(grpcAmount), b.url(name+"Try"), b.url(name+"Confirm"), b.url(name+"Cancel"),
					&emptypb.Empty{})
				if err != nil {
					return err
				}
			}
			return nil
		})
	return gid, err
}

// assertTccCalls checks the metadata of every call and that phase 2 gets the payload the try registered.
func assertTccCalls(t *testing.T, b *grpcBusi, gid string) {
	t.Helper()
	for _, c := range b.of(gid) {
		assertEqual(t, c.Method+": trans_type", c.TransType, "tcc")
		samePayload(t, c.Method, c.Payload, transfer(grpcAmount))
	}
}

func TestGrpcTccNormal(t *testing.T) {
	t.Parallel()
	dtm, b := dtmGRPC(t), newGrpcBusi(t)
	gid, err := transferTccGrpc(t, dtm, b)
	if err != nil {
		t.Fatalf("tcc: %v", err)
	}
	q := waitStatus(t, gid, "succeed")
	assertEqual(t, "trans_type", q.Transaction.TransType, "tcc")
	assertEqual(t, "branch statuses", q.statuses(), "psps")
	assertSeq(t, "busi calls", b.sequence(gid), []string{
		"TransOutTry(01,try)", "TransInTry(02,try)", "TransInConfirm(02,confirm)", "TransOutConfirm(01,confirm)",
	})
	assertTccCalls(t, b, gid)
}

// A try answering Aborted fails the TCC: the SDK aborts with its error as rollback_reason, and every registered
// branch is cancelled in reverse order.
func TestGrpcTccRollback(t *testing.T) {
	t.Parallel()
	dtm, b := dtmGRPC(t), newGrpcBusi(t)
	b.script("TransInTry", codes.Aborted)
	gid, err := transferTccGrpc(t, dtm, b)
	if err == nil {
		t.Fatalf("tcc with a failing try returned no error")
	}
	q := waitStatus(t, gid, "failed")
	assertEqual(t, "branch statuses", q.statuses(), "spsp")
	assertEqual(t, "rollback_reason", q.Transaction.RollbackReason, err.Error())
	assertSeq(t, "busi calls", b.sequence(gid), []string{
		"TransOutTry(01,try)", "TransInTry(02,try)", "TransInCancel(02,cancel)", "TransOutCancel(01,cancel)",
	})
	assertTccCalls(t, b, gid)
}

// TransIn's try opens a nested branch through TccFromGrpc (the dtm-* metadata the SDK sent); confirms run
// child first.
func TestGrpcTccNested(t *testing.T) {
	t.Parallel()
	dtm, b := dtmGRPC(t), newGrpcBusi(t)
	b.on("TransInTry", func(ctx context.Context, _ []byte) error {
		child, err := dtmgrpc.TccFromGrpc(ctx)
		if err != nil {
			t.Errorf("TccFromGrpc: %v", err)
			return err
		}
		return child.CallBranch(transfer(grpcAmount), b.url("NestedTry"), b.url("NestedConfirm"), b.url("NestedCancel"),
			&emptypb.Empty{})
	})
	gid, err := transferTccGrpc(t, dtm, b)
	if err != nil {
		t.Fatalf("tcc: %v", err)
	}
	q := waitStatus(t, gid, "succeed")
	assertSeq(t, "branches", q.rows(), []string{
		"01 cancel prepared", "01 confirm succeed", "02 cancel prepared", "02 confirm succeed",
		"0201 cancel prepared", "0201 confirm succeed",
	})
	assertSeq(t, "busi calls", b.sequence(gid), []string{
		"TransOutTry(01,try)", "TransInTry(02,try)", "NestedTry(0201,try)",
		"NestedConfirm(0201,confirm)", "TransInConfirm(02,confirm)", "TransOutConfirm(01,confirm)",
	})
	assertTccCalls(t, b, gid)
}
