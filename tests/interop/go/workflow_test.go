package interop

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/dtm-labs/client/dtmcli/dtmimp"
	"github.com/dtm-labs/client/workflow"
)

// The workflow engine is process-wide (InitHTTP, Register), so one callback server serves every test.
var callbacks = &callbackLog{}

type callbackLog struct {
	mu    sync.Mutex
	calls []call
}

func (l *callbackLog) of(gid string) []call {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []call
	for _, c := range l.calls {
		if c.Gid == gid {
			out = append(out, c)
		}
	}
	return out
}

func (l *callbackLog) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	q := r.URL.Query()
	l.mu.Lock()
	l.calls = append(l.calls, call{
		Path: r.URL.Path, Method: r.Method, Gid: q.Get("gid"), BranchID: q.Get("branch_id"), Op: q.Get("op"),
		Query: q, Body: body,
	})
	l.mu.Unlock()
	if err := workflow.ExecuteByQS(q, body); err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"message":"` + strings.ReplaceAll(err.Error(), `"`, `'`) + `"}`))
		return
	}
	reply(w, 200)
}

func TestMain(m *testing.M) {
	server := httptest.NewServer(http.HandlerFunc(callbacks.serve))
	dtm, callback := strings.TrimRight(os.Getenv("DTM_URL"), "/"), server.URL+"/workflowResume"
	workflow.InitHTTP(dtm, callback)
	// Last: with DTM_GRPC set, gRPC becomes the engine's default protocol (its gRPC resume callback refuses to
	// run otherwise), so the HTTP workflows pin themselves to HTTP.
	stopGrpc := initGrpcWorkflows()
	registerWorkflows(overHTTP(dtm, callback))
	registerGrpcWorkflows()
	code := m.Run()
	stopGrpc()
	server.Close()
	os.Exit(code)
}

// overHTTP pins a workflow to the HTTP API whatever the engine's default protocol: these are the fields
// InitHTTP would have set.
func overHTTP(dtm, callback string) func(wf *workflow.Workflow) {
	return func(wf *workflow.Workflow) {
		wf.Protocol, wf.Dtm, wf.QueryPrepared = dtmimp.ProtocolHTTP, dtm, callback
	}
}

type wfInput struct {
	Busi string `json:"busi"`
}

func input(t *testing.T, b *busi) []byte {
	t.Helper()
	data, err := json.Marshal(wfInput{Busi: b.Server.URL})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func busiOf(data []byte) string {
	var in wfInput
	_ = json.Unmarshal(data, &in)
	return in.Busi
}

// twoSteps: TransOut then TransIn, each with a compensation.
func twoSteps(wf *workflow.Workflow, data []byte) error {
	u := busiOf(data)
	for _, name := range []string{"TransOut", "TransIn"} {
		revert := u + "/" + name + "Revert"
		wf.NewBranch().OnRollback(func(bb *dtmcli.BranchBarrier) error {
			_, err := wf.NewRequest().SetBody(data).Post(revert)
			return err
		})
		if _, err := wf.NewRequest().SetBody(data).Post(u + "/" + name); err != nil {
			return err
		}
	}
	return nil
}

// noEarlyResume keeps the server's resume callback away while the client is still running.
func noEarlyResume(wf *workflow.Workflow) { wf.RetryInterval = 30 }

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func registerWorkflows(overHTTP func(wf *workflow.Workflow)) {
	must(workflow.Register("wf_success", twoSteps, overHTTP, noEarlyResume))
	must(workflow.Register("wf_rollback", twoSteps, overHTTP, noEarlyResume))
	must(workflow.Register("wf_ongoing", twoSteps, overHTTP, func(wf *workflow.Workflow) { wf.RetryInterval = 1 }))
	must(workflow.Register2("wf_result", func(wf *workflow.Workflow, data []byte) ([]byte, error) {
		res, err := wf.NewBranch().NewRequest().SetBody(data).Post(busiOf(data) + "/TransOut")
		if err != nil {
			return nil, err
		}
		return append([]byte("result:"), res.Body()...), nil
	}, overHTTP, noEarlyResume))
}

// S30 a
func TestWorkflowSuccess(t *testing.T) {
	t.Parallel()
	dtm, b := dtmURL(t), newBusi(t)
	gid := dtmcli.MustGenGid(dtm)
	if err := workflow.Execute("wf_success", gid, input(t, b)); err != nil {
		t.Fatalf("execute: %v", err)
	}
	q := query(t, gid)
	assertEqual(t, "status", q.status(), "succeed")
	assertSeq(t, "branches", q.rows(), []string{"01 action succeed", "02 action succeed"})
	assertSeq(t, "busi calls", b.sequence(gid), []string{"/TransOut(01,action)", "/TransIn(02,action)"})
	for _, c := range b.callsOf(gid) {
		assertEqual(t, "trans_type", c.Query.Get("trans_type"), "workflow")
	}
}

// S30 b
func TestWorkflowRollback(t *testing.T) {
	t.Parallel()
	dtm, b := dtmURL(t), newBusi(t)
	b.script("/TransIn", 409)
	gid := dtmcli.MustGenGid(dtm)
	err := workflow.Execute("wf_rollback", gid, input(t, b))
	if !errors.Is(err, dtmcli.ErrFailure) {
		t.Fatalf("execute: got %v, want ErrFailure", err)
	}
	q := query(t, gid)
	assertEqual(t, "status", q.status(), "failed")
	assertSeq(t, "branches", q.rows(), []string{"01 action succeed", "02 action failed", "01 rollback succeed"})
	assertSeq(t, "busi calls", b.sequence(gid), []string{
		"/TransOut(01,action)", "/TransIn(02,action)", "/TransOutRevert(01,rollback)",
	})
	if q.Transaction.RollbackReason == "" {
		t.Fatalf("no rollback_reason stored")
	}
	// A failed workflow executed again returns the stored failure without running.
	if err := workflow.Execute("wf_rollback", gid, input(t, b)); !errors.Is(err, dtmcli.ErrFailure) {
		t.Fatalf("re-execute: got %v, want ErrFailure", err)
	}
	assertEqual(t, "busi calls after re-execute", len(b.callsOf(gid)), 3)
}

// S30 c: an ONGOING step leaves the workflow prepared; the server's callback resumes and finishes it.
func TestWorkflowOngoingResumedByCallback(t *testing.T) {
	t.Parallel()
	dtm, b := dtmURL(t), newBusi(t)
	b.script("/TransOut", 425, 425)
	gid := dtmcli.MustGenGid(dtm)
	data := input(t, b)
	if err := workflow.Execute("wf_ongoing", gid, data); err == nil {
		t.Fatalf("execute with an ONGOING step returned no error")
	}
	q := waitStatus(t, gid, "succeed")
	assertSeq(t, "branches", q.rows(), []string{"01 action succeed", "02 action succeed"})
	cbs := callbacks.of(gid)
	if len(cbs) == 0 {
		t.Fatalf("the server never called the resume callback")
	}
	cb := cbs[0]
	assertEqual(t, "callback method", cb.Method, http.MethodPost)
	assertEqual(t, "callback path", cb.Path, "/workflowResume")
	assertEqual(t, "callback op", cb.Op, "wf_ongoing")
	assertEqual(t, "callback branch_id", cb.BranchID, "00")
	assertEqual(t, "callback trans_type", cb.Query.Get("trans_type"), "workflow")
	assertEqual(t, "callback body", string(cb.Body), string(data))
	assertEqual(t, "TransIn calls", b.count("/TransIn"), 1)
}

// S30 d: Execute2's result is stored and replayed by a second Execute2 without running again.
func TestWorkflowExecute2ResultReplayed(t *testing.T) {
	t.Parallel()
	dtm, b := dtmURL(t), newBusi(t)
	gid := dtmcli.MustGenGid(dtm)
	data := input(t, b)
	first, err := workflow.Execute2("wf_result", gid, data)
	if err != nil {
		t.Fatalf("execute2: %v", err)
	}
	want := `result:{"dtm_result":"SUCCESS"}`
	assertEqual(t, "result", string(first), want)
	again, err := workflow.Execute2("wf_result", gid, data)
	if err != nil {
		t.Fatalf("second execute2: %v", err)
	}
	assertEqual(t, "replayed result", string(again), want)
	assertEqual(t, "busi calls", len(b.callsOf(gid)), 1)
	assertEqual(t, "status", query(t, gid).status(), "succeed")
}
