package interop

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/dtm-labs/client/dtmcli"
)

// authURL is DTM_URL when it carries a token in its userinfo (a node started with --auth-file, see
// test_go_sdk.py); the suite's main run has none and leaves these tests out.
func authURL(t *testing.T) (withToken, without string) {
	t.Helper()
	u, err := url.Parse(dtmURL(t))
	if err != nil || u.User == nil {
		t.Skip("DTM_URL carries no token")
	}
	bare := *u
	bare.User = nil
	return u.String(), bare.String()
}

// The SDK passes the URL to resty, whose net/http client sends its userinfo as HTTP Basic: the token
// goes as the password, unchanged application code.
func TestAuthSagaTokenInServerURL(t *testing.T) {
	t.Parallel()
	dtm, bare := authURL(t)
	b := newBusi(t)
	saga := transferSaga(dtm, b)
	if err := saga.Submit(); err != nil {
		t.Fatalf("submit: %v", err)
	}
	q := waitStatus(t, saga.Gid, "succeed")
	assertEqual(t, "branch statuses", q.statuses(), "psps")
	assertSeq(t, "busi calls", b.sequence(saga.Gid), []string{"/TransOut(01,action)", "/TransIn(02,action)"})

	// Without the token: refused as a plain error (the reply body), not read as the transaction's
	// FAILURE, and nothing recorded.
	refused := dtmcli.NewSaga(bare, "go-auth-refused").Add(b.url("/TransOut"), b.url("/TransOutRevert"), body)
	err := refused.Submit()
	if err == nil || !strings.Contains(err.Error(), "unauthorized") || strings.Contains(err.Error(), "FAILURE") {
		t.Fatalf("submit without a token: %v, want the 401's message", err)
	}
	assertEqual(t, "refused saga recorded", query(t, "go-auth-refused").status(), "")
	for _, path := range []string{"/newGid", "/query?gid=" + saga.Gid} {
		resp, err := http.Get(bare + path)
		if err != nil {
			t.Fatalf("%s without a token: %v", path, err)
		}
		resp.Body.Close()
		assertEqual(t, path+" without a token", resp.StatusCode, http.StatusUnauthorized)
	}
}

func TestAuthTccTokenInServerURL(t *testing.T) {
	t.Parallel()
	dtm, _ := authURL(t)
	b := newBusi(t)
	gid, err := transferTcc(dtm, b)
	if err != nil {
		t.Fatalf("tcc: %v", err)
	}
	q := waitStatus(t, gid, "succeed")
	assertEqual(t, "branch statuses", q.statuses(), "psps")
	assertSeq(t, "busi calls", b.sequence(gid), []string{
		"/TransOutTry(01,try)", "/TransInTry(02,try)", "/TransInConfirm(02,confirm)", "/TransOutConfirm(01,confirm)",
	})
}

func TestAuthTccRollbackTokenInServerURL(t *testing.T) {
	t.Parallel()
	dtm, _ := authURL(t)
	b := newBusi(t)
	b.script("/TransInTry", 409)
	gid, err := transferTcc(dtm, b)
	if err == nil {
		t.Fatalf("tcc with a failing try returned no error")
	}
	q := waitStatus(t, gid, "failed")
	assertEqual(t, "branch statuses", q.statuses(), "spsp")
}
