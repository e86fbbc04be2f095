package interop

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/go-resty/resty/v2"
)

var body = map[string]interface{}{"amount": 30}

func bodyBytes() []byte {
	b, _ := json.Marshal(body)
	return b
}

func transferSaga(dtm string, b *busi) *dtmcli.Saga {
	return dtmcli.NewSaga(dtm, dtmcli.MustGenGid(dtm)).
		Add(b.url("/TransOut"), b.url("/TransOutRevert"), body).
		Add(b.url("/TransIn"), b.url("/TransInRevert"), body)
}

// S01
func TestSagaNormal(t *testing.T) {
	t.Parallel()
	dtm, b := dtmURL(t), newBusi(t)
	saga := transferSaga(dtm, b)
	if err := saga.Submit(); err != nil {
		t.Fatalf("submit: %v", err)
	}
	q := waitStatus(t, saga.Gid, "succeed")
	assertEqual(t, "branch statuses", q.statuses(), "psps")
	assertSeq(t, "busi calls", b.sequence(saga.Gid), []string{"/TransOut(01,action)", "/TransIn(02,action)"})
	for _, c := range b.callsOf(saga.Gid) {
		assertEqual(t, "method", c.Method, http.MethodPost)
		assertEqual(t, "body", string(c.Body), string(bodyBytes()))
		assertEqual(t, "trans_type", c.Query.Get("trans_type"), "saga")
	}
}

// S02
func TestSagaRollback(t *testing.T) {
	t.Parallel()
	dtm, b := dtmURL(t), newBusi(t)
	b.script("/TransIn", 409)
	saga := transferSaga(dtm, b)
	if err := saga.Submit(); err != nil {
		t.Fatalf("submit: %v", err)
	}
	q := waitStatus(t, saga.Gid, "failed")
	assertEqual(t, "branch statuses", q.statuses(), "sssf")
	if !strings.Contains(q.Transaction.RollbackReason, "FAILURE") {
		t.Fatalf("rollback_reason %q does not hold the branch's FAILURE", q.Transaction.RollbackReason)
	}
	assertSeq(t, "busi calls", b.sequence(saga.Gid), []string{
		"/TransOut(01,action)", "/TransIn(02,action)", "/TransInRevert(02,compensate)", "/TransOutRevert(01,compensate)",
	})
}

// S06: with WaitResult, Submit returns once the saga is final; a failed saga is an error.
func TestSagaWaitResult(t *testing.T) {
	t.Parallel()
	dtm, b := dtmURL(t), newBusi(t)
	saga := transferSaga(dtm, b)
	saga.WaitResult = true
	if err := saga.Submit(); err != nil {
		t.Fatalf("submit: %v", err)
	}
	q := query(t, saga.Gid)
	assertEqual(t, "status right after submit", q.status(), "succeed")
	assertEqual(t, "branch statuses", q.statuses(), "psps")

	b.script("/TransIn", 409)
	failing := transferSaga(dtm, b)
	failing.WaitResult = true
	err := failing.Submit()
	if err == nil {
		t.Fatalf("submit of a failing saga with WaitResult returned no error")
	}
	q = query(t, failing.Gid)
	assertEqual(t, "status right after submit", q.status(), "failed")
	assertEqual(t, "branch statuses", q.statuses(), "sssf")
}

// S08: A0 and A1 both succeed before A2 and A3 start.
func TestSagaConcurrentBranchOrder(t *testing.T) {
	t.Parallel()
	dtm, b := dtmURL(t), newBusi(t)
	b.on("/A0", func(*http.Request, []byte) int {
		time.Sleep(300 * time.Millisecond)
		return 200
	})
	saga := dtmcli.NewSaga(dtm, dtmcli.MustGenGid(dtm))
	for _, name := range []string{"A0", "A1", "A2", "A3"} {
		saga.Add(b.url("/"+name), b.url("/C"+name[1:]), body)
	}
	saga.SetConcurrent().AddBranchOrder(2, []int{0, 1}).AddBranchOrder(3, []int{0, 1})
	if err := saga.Submit(); err != nil {
		t.Fatalf("submit: %v", err)
	}
	q := waitStatus(t, saga.Gid, "succeed")
	assertEqual(t, "branch statuses", q.statuses(), "psps"+"psps")
	at := map[string]time.Time{}
	for _, c := range b.callsOf(saga.Gid) {
		at[c.Path] = c.At
	}
	if len(at) != 4 {
		t.Fatalf("calls: %v", b.sequence(saga.Gid))
	}
	a0Done := at["/A0"].Add(300 * time.Millisecond)
	for _, later := range []string{"/A2", "/A3"} {
		if at[later].Before(a0Done) || at[later].Before(at["/A1"]) {
			t.Fatalf("%s started before A0 and A1 finished: %v", later, at)
		}
	}
}

// S28: WithRetryLimit(1) and an action that keeps erroring → aborted with the retry-limit reason.
func TestSagaRetryLimit(t *testing.T) {
	t.Parallel()
	dtm, b := dtmURL(t), newBusi(t)
	b.script("/TransIn", 500, 500, 500)
	saga := transferSaga(dtm, b)
	saga.WithRetryLimit(1)
	if err := saga.Submit(); err != nil {
		t.Fatalf("submit: %v", err)
	}
	q := waitStatus(t, saga.Gid, "failed")
	assertEqual(t, "rollback_reason", q.Transaction.RollbackReason, "RetryCount is greater than RetryLimit, RetryLimit: 1")
	assertEqual(t, "branch statuses", q.statuses(), "sssp")
	assertEqual(t, "TransOutRevert calls", b.count("/TransOutRevert"), 1)
}

// S12: Prepare stores the msg without calling anything; Submit runs the branches in order.
func TestMsgPrepareSubmit(t *testing.T) {
	t.Parallel()
	dtm, b := dtmURL(t), newBusi(t)
	msg := dtmcli.NewMsg(dtm, dtmcli.MustGenGid(dtm)).
		Add(b.url("/TransOut"), body).
		Add(b.url("/TransIn"), body)
	if err := msg.Prepare(b.url("/QueryPrepared")); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	q := query(t, msg.Gid)
	assertEqual(t, "status after prepare", q.status(), "prepared")
	assertEqual(t, "branch statuses after prepare", q.statuses(), "pp")
	assertEqual(t, "calls after prepare", len(b.callsOf(msg.Gid)), 0)
	if err := msg.Submit(); err != nil {
		t.Fatalf("submit: %v", err)
	}
	q = waitStatus(t, msg.Gid, "succeed")
	assertEqual(t, "branch statuses", q.statuses(), "ss")
	assertSeq(t, "busi calls", b.sequence(msg.Gid), []string{"/TransOut(01,action)", "/TransIn(02,action)"})
	assertEqual(t, "QueryPrepared calls", b.count("/QueryPrepared"), 0)
}

// SetDelay(2): no branch is called in the first 2 seconds.
func TestMsgSetDelay(t *testing.T) {
	t.Parallel()
	dtm, b := dtmURL(t), newBusi(t)
	msg := dtmcli.NewMsg(dtm, dtmcli.MustGenGid(dtm)).Add(b.url("/TransOut"), body).SetDelay(2)
	start := time.Now()
	if err := msg.Submit(); err != nil {
		t.Fatalf("submit: %v", err)
	}
	time.Sleep(1500 * time.Millisecond)
	assertEqual(t, "calls within the delay", len(b.callsOf(msg.Gid)), 0)
	waitStatus(t, msg.Gid, "succeed")
	calls := b.callsOf(msg.Gid)
	if len(calls) != 1 {
		t.Fatalf("calls: %v", b.sequence(msg.Gid))
	}
	if d := calls[0].At.Sub(start); d < 1900*time.Millisecond {
		t.Fatalf("branch called %s after submit, before the 2 s delay", d)
	}
}

func transferTcc(dtm string, b *busi) (string, error) {
	gid := dtmcli.MustGenGid(dtm)
	err := dtmcli.TccGlobalTransaction(dtm, gid, func(tcc *dtmcli.Tcc) (*resty.Response, error) {
		for _, name := range []string{"TransOut", "TransIn"} {
			resp, err := tcc.CallBranch(body, b.url("/"+name+"Try"), b.url("/"+name+"Confirm"), b.url("/"+name+"Cancel"))
			if err != nil {
				return resp, err
			}
		}
		return nil, nil
	})
	return gid, err
}

// S17
func TestTccNormal(t *testing.T) {
	t.Parallel()
	dtm, b := dtmURL(t), newBusi(t)
	gid, err := transferTcc(dtm, b)
	if err != nil {
		t.Fatalf("tcc: %v", err)
	}
	q := waitStatus(t, gid, "succeed")
	assertEqual(t, "branch statuses", q.statuses(), "psps")
	assertSeq(t, "busi calls", b.sequence(gid), []string{
		"/TransOutTry(01,try)", "/TransInTry(02,try)", "/TransInConfirm(02,confirm)", "/TransOutConfirm(01,confirm)",
	})
	last := b.callsOf(gid)[3]
	assertEqual(t, "confirm body", string(last.Body), string(bodyBytes()))
}

// S18: a failed try aborts; the SDK's error is stored as rollback_reason; every branch is cancelled.
func TestTccRollback(t *testing.T) {
	t.Parallel()
	dtm, b := dtmURL(t), newBusi(t)
	b.script("/TransInTry", 409)
	gid, err := transferTcc(dtm, b)
	if err == nil {
		t.Fatalf("tcc with a failing try returned no error")
	}
	q := waitStatus(t, gid, "failed")
	assertEqual(t, "branch statuses", q.statuses(), "spsp")
	if q.Transaction.RollbackReason == "" || !strings.Contains(q.Transaction.RollbackReason, "FAILURE") {
		t.Fatalf("rollback_reason %q, want the SDK's error text (%v)", q.Transaction.RollbackReason, err)
	}
	assertSeq(t, "busi calls", b.sequence(gid), []string{
		"/TransOutTry(01,try)", "/TransInTry(02,try)", "/TransInCancel(02,cancel)", "/TransOutCancel(01,cancel)",
	})
}

// S20: TransIn's try opens a nested branch through TccFromQuery; confirms run child first.
func TestTccNested(t *testing.T) {
	t.Parallel()
	dtm, b := dtmURL(t), newBusi(t)
	b.on("/TransInTry", func(r *http.Request, _ []byte) int {
		child, err := dtmcli.TccFromQuery(r.URL.Query())
		if err != nil {
			t.Errorf("TccFromQuery: %v", err)
			return 500
		}
		if _, err := child.CallBranch(body, b.url("/NestedTry"), b.url("/NestedConfirm"), b.url("/NestedCancel")); err != nil {
			t.Errorf("nested CallBranch: %v", err)
			return 409
		}
		return 200
	})
	gid, err := transferTcc(dtm, b)
	if err != nil {
		t.Fatalf("tcc: %v", err)
	}
	q := waitStatus(t, gid, "succeed")
	assertSeq(t, "branches", q.rows(), []string{
		"01 cancel prepared", "01 confirm succeed", "02 cancel prepared", "02 confirm succeed",
		"0201 cancel prepared", "0201 confirm succeed",
	})
	assertSeq(t, "busi calls", b.sequence(gid), []string{
		"/TransOutTry(01,try)", "/TransInTry(02,try)", "/NestedTry(0201,try)",
		"/NestedConfirm(0201,confirm)", "/TransInConfirm(02,confirm)", "/TransOutConfirm(01,confirm)",
	})
}
