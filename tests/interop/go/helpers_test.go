package interop

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitTimeout bounds every wait on the server: its test timings are sub-second.
const waitTimeout = 20 * time.Second

// dtmURL is the fastdtm server under test, e.g. http://127.0.0.1:36789/api/dtmsvr.
func dtmURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("DTM_URL")
	if u == "" {
		t.Skip("DTM_URL is not set")
	}
	return strings.TrimRight(u, "/")
}

// call is one request a busi server received.
type call struct {
	Path     string
	Method   string
	Gid      string
	BranchID string
	Op       string
	Query    url.Values
	Body     []byte
	At       time.Time
}

// handlerFunc answers a call with a status code (200, 409, 425, 500).
type handlerFunc func(r *http.Request, body []byte) int

// busi is a scripted branch service on 127.0.0.1 that records every call.
type busi struct {
	*httptest.Server
	mu       sync.Mutex
	calls    []call
	scripts  map[string][]int
	handlers map[string]handlerFunc
}

func newBusi(t *testing.T) *busi {
	t.Helper()
	b := &busi{scripts: map[string][]int{}, handlers: map[string]handlerFunc{}}
	b.Server = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.Close)
	return b
}

// url of a path on this server.
func (b *busi) url(path string) string { return b.Server.URL + path }

// script makes the next calls of path answer these codes in turn; after them, 200.
func (b *busi) script(path string, codes ...int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.scripts[path] = append([]int(nil), codes...)
}

// on makes path answer through fn (after any script is used up).
func (b *busi) on(path string, fn handlerFunc) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.handlers[path] = fn
}

func (b *busi) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	q := r.URL.Query()
	c := call{
		Path: r.URL.Path, Method: r.Method, Gid: q.Get("gid"), BranchID: q.Get("branch_id"), Op: q.Get("op"),
		Query: q, Body: body, At: time.Now(),
	}
	b.mu.Lock()
	b.calls = append(b.calls, c)
	code := 200
	var fn handlerFunc
	if s := b.scripts[r.URL.Path]; len(s) > 0 {
		code, b.scripts[r.URL.Path] = s[0], s[1:]
	} else {
		fn = b.handlers[r.URL.Path]
	}
	b.mu.Unlock()
	if fn != nil {
		code = fn(r, body)
	}
	reply(w, code)
}

func reply(w http.ResponseWriter, code int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	switch code {
	case 200:
		_, _ = w.Write([]byte(`{"dtm_result":"SUCCESS"}`))
	case 409:
		_, _ = w.Write([]byte(`{"dtm_result":"FAILURE"}`))
	case 425:
		_, _ = w.Write([]byte(`{"dtm_result":"ONGOING"}`))
	default:
		_, _ = w.Write([]byte(`{"message":"ERROR"}`))
	}
}

// callsOf lists the calls made for gid, in arrival order.
func (b *busi) callsOf(gid string) []call {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []call
	for _, c := range b.calls {
		if c.Gid == gid {
			out = append(out, c)
		}
	}
	return out
}

// sequence renders gid's calls as "Path(branch_id,op)".
func (b *busi) sequence(gid string) []string {
	var out []string
	for _, c := range b.callsOf(gid) {
		out = append(out, fmt.Sprintf("%s(%s,%s)", c.Path, c.BranchID, c.Op))
	}
	return out
}

func (b *busi) count(path string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.calls {
		if c.Path == path {
			n++
		}
	}
	return n
}

type queryBranch struct {
	BranchID string `json:"branch_id"`
	Op       string `json:"op"`
	Status   string `json:"status"`
	URL      string `json:"url"`
}

type queryReply struct {
	Transaction *struct {
		Gid            string `json:"gid"`
		Status         string `json:"status"`
		TransType      string `json:"trans_type"`
		RollbackReason string `json:"rollback_reason"`
	} `json:"transaction"`
	Branches []queryBranch `json:"branches"`
}

func (q *queryReply) status() string {
	if q.Transaction == nil {
		return ""
	}
	return q.Transaction.Status
}

// statuses abbreviates the branch statuses in /query order: p(repared), s(ucceed), f(ailed).
func (q *queryReply) statuses() string {
	var sb strings.Builder
	for _, br := range q.Branches {
		if br.Status == "" {
			sb.WriteString("?")
		} else {
			sb.WriteString(br.Status[:1])
		}
	}
	return sb.String()
}

// rows renders the branches as "branch_id op status".
func (q *queryReply) rows() []string {
	var out []string
	for _, br := range q.Branches {
		out = append(out, br.BranchID+" "+br.Op+" "+br.Status)
	}
	return out
}

func query(t *testing.T, gid string) *queryReply {
	t.Helper()
	resp, err := http.Get(dtmURL(t) + "/query?gid=" + url.QueryEscape(gid))
	if err != nil {
		t.Fatalf("query %s: %v", gid, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("query %s: HTTP %d %s", gid, resp.StatusCode, body)
	}
	var q queryReply
	if err := json.Unmarshal(body, &q); err != nil {
		t.Fatalf("query %s: %v in %s", gid, err, body)
	}
	return &q
}

// waitStatus polls /query until the global status is one of want.
func waitStatus(t *testing.T, gid string, want ...string) *queryReply {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		q := query(t, gid)
		for _, w := range want {
			if q.status() == w {
				return q
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gid %s: status %q after %s, want one of %v; branches %v", gid, q.status(), waitTimeout, want, q.rows())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func assertEqual[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func assertSeq(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("%s:\n got  %v\n want %v", what, got, want)
	}
}

func (b *busi) countOf(gid, path string) int {
	n := 0
	for _, c := range b.callsOf(gid) {
		if c.Path == path {
			n++
		}
	}
	return n
}
