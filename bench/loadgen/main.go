// Command loadgen is the closed-loop load generator of bench/side_by_side.py: it drives DTM's HTTP
// API, or its gRPC API (-workload saga-grpc, grpc.go), of fastdtm or Go DTM, the same bytes to both,
// with whole transactions and reports per-transaction throughput and latency as one JSON line.
//
// Why not wrk: a msg transaction is two requests and a TCC transaction is six (four of them to the
// coordinator, two "try" calls to the branch server), each reply must be checked, every transaction
// needs a unique gid, and the latency wanted is that of the whole transaction. A compiled client costs
// about as little CPU as wrk, so the client core is not what limits the figures.
//
// N goroutines (-concurrency) each run transactions back to back on one shared keep-alive client.
// After -warmup, the window of -duration starts; only transactions that finish inside it count.
// With -markers, {"event":"window_start"} and {"event":"window_end"} lines are printed when the window
// opens and closes, so the harness can read CPU and Redis counters over the same window; after its
// report it then waits for its standard input to close before exiting, so that the harness can still
// read this process's CPU time in /proc after the window (a short transaction drains in milliseconds).
// With -verify, it runs one transaction, then checks with GET /api/dtmsvr/query that it succeeded.
//
// `loadgen grpc-branch -listen ADDR` is instead the gRPC branch server of saga-grpc (grpc.go).
//
// Dependencies: the standard library, and for gRPC grpc-go and the DTM client SDK's generated
// messages (go.mod): go build -o loadgen .
package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

// payload is the branch body of every workload, the shape DTM's examples use.
const payload = `{"amount":30}`

// topReasons is how many distinct error reasons the report keeps.
const topReasons = 5

var validPrefix = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

type config struct {
	coord       string // coordinator base URL, e.g. http://127.0.0.1:36789
	branch      string // branch server base URL, e.g. http://127.0.0.1:8081/api/busi
	grpc        string // coordinator gRPC address (saga-grpc), e.g. 127.0.0.1:36790
	grpcBranch  string // gRPC branch server address (saga-grpc), e.g. 127.0.0.1:50589
	workload    string
	concurrency int
	warmup      time.Duration
	duration    time.Duration
	timeout     time.Duration
	prefix      string
	verify      bool
	markers     bool
}

// txFunc runs one whole transaction with the given gid; nil means it succeeded.
type txFunc func(c *client, gid string) error

var workloads = map[string]func(c *client) txFunc{
	"saga-empty": sagaWorkload(false),
	"saga-http":  sagaWorkload(true),
	"msg":        msgWorkload,
	"tcc":        tccWorkload,
	"saga-grpc":  grpcSagaWorkload,
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "grpc-branch" {
		os.Exit(grpcBranchMain(os.Args[2:]))
	}
	cfg, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	c, err := newClient(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	tx := workloads[cfg.workload](c)
	if cfg.verify {
		os.Exit(verify(c, cfg, tx))
	}
	printJSON(measure(c, cfg, tx))
	if cfg.markers {
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
}

func parseFlags() (config, error) {
	var cfg config
	flag.StringVar(&cfg.coord, "coord", "", "coordinator base URL (required), e.g. http://127.0.0.1:36789")
	flag.StringVar(&cfg.branch, "branch", "", "branch server base URL (HTTP workloads), e.g. http://127.0.0.1:8081/api/busi")
	flag.StringVar(&cfg.grpc, "grpc", "", "coordinator gRPC address (saga-grpc), e.g. 127.0.0.1:36790")
	flag.StringVar(&cfg.grpcBranch, "grpc-branch", "", "gRPC branch server address (saga-grpc), e.g. 127.0.0.1:50589")
	flag.StringVar(&cfg.workload, "workload", "saga-empty", "saga-empty, saga-http, msg, tcc or saga-grpc")
	flag.IntVar(&cfg.concurrency, "concurrency", 16, "transactions in flight (goroutines)")
	flag.DurationVar(&cfg.warmup, "warmup", 3*time.Second, "unmeasured time before the window")
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured window")
	flag.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "timeout of one HTTP request or gRPC call")
	flag.StringVar(&cfg.prefix, "prefix", "", "gid prefix, unique per run (default: from the clock)")
	flag.BoolVar(&cfg.verify, "verify", false, "run one transaction and check its stored status, then exit")
	flag.BoolVar(&cfg.markers, "markers", false, "print window_start / window_end event lines")
	flag.Parse()
	switch {
	case flag.NArg() > 0:
		return cfg, fmt.Errorf("unexpected arguments %q", flag.Args())
	case workloads[cfg.workload] == nil:
		return cfg, fmt.Errorf("unknown workload %q", cfg.workload)
	case cfg.coord == "":
		return cfg, errors.New("-coord is required (the HTTP API: -verify reads the transaction back there)")
	case cfg.workload == "saga-grpc" && (cfg.grpc == "" || cfg.grpcBranch == ""):
		return cfg, errors.New("saga-grpc needs -grpc and -grpc-branch")
	case cfg.workload != "saga-grpc" && cfg.branch == "":
		return cfg, errors.New("-branch is required")
	case cfg.concurrency < 1 || cfg.duration <= 0 || cfg.warmup < 0 || cfg.timeout <= 0:
		return cfg, errors.New("-concurrency, -duration and -timeout must be positive, -warmup not negative")
	}
	if cfg.prefix == "" {
		cfg.prefix = "lg" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	if !validPrefix.MatchString(cfg.prefix) {
		// The gid goes into JSON bodies and URLs unescaped, so it must not need escaping.
		return cfg, fmt.Errorf("-prefix %q: use 1-64 of A-Z a-z 0-9 _ -", cfg.prefix)
	}
	cfg.coord = strings.TrimRight(cfg.coord, "/")
	cfg.branch = strings.TrimRight(cfg.branch, "/")
	return cfg, nil
}

// ----------------------------------------------------------------------------- HTTP

type client struct {
	http *http.Client
	api  string // <coord>/api/dtmsvr
	// Branch base URL; the workloads add /TransOut, /TransIn, ...
	branch string
	// saga-grpc only: one connection to the coordinator's gRPC port, and the branch server's address.
	grpc       *grpc.ClientConn
	grpcBranch string
	timeout    time.Duration
}

func newClient(cfg config) (*client, error) {
	transport := &http.Transport{
		Proxy:       nil, // loopback: never through an environment proxy
		DialContext: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		// Every goroutine keeps its connections to the coordinator and the branch server open:
		// without this, Go keeps 2 idle connections per host and the rest are re-dialled each time.
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: cfg.concurrency + 8,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		// HTTP/1.1 only, as both servers and DTM's SDKs speak it (a non-nil empty map disables h2).
		ForceAttemptHTTP2: false,
		TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	c := &client{
		http:       &http.Client{Transport: transport, Timeout: cfg.timeout},
		api:        cfg.coord + "/api/dtmsvr",
		branch:     cfg.branch,
		grpcBranch: cfg.grpcBranch,
		timeout:    cfg.timeout,
	}
	if cfg.grpc != "" {
		conn, err := dialGrpc(cfg.grpc)
		if err != nil {
			return nil, fmt.Errorf("-grpc %s: %w", cfg.grpc, err)
		}
		c.grpc = conn
	}
	return c, nil
}

// post sends a JSON body; the step succeeded when the reply is HTTP 200 with SUCCESS in its body
// (DTM's own rule for its API and for branch replies).
func (c *client) post(step, target string, body []byte) error {
	resp, err := c.http.Post(target, "application/json", bytes.NewReader(body))
	if err != nil {
		return &txError{step: step, msg: err.Error(), network: true}
	}
	data, err := io.ReadAll(resp.Body) // read to the end so the connection is reused
	_ = resp.Body.Close()
	if err != nil {
		return &txError{step: step, msg: "reading reply: " + err.Error(), network: true}
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(data, []byte("SUCCESS")) {
		return &txError{step: step, msg: fmt.Sprintf("HTTP %d: %s", resp.StatusCode, clip(data, 160))}
	}
	return nil
}

type txError struct {
	step    string
	msg     string
	network bool // no HTTP reply at all: back off a little instead of spinning
}

func (e *txError) Error() string { return e.step + ": " + e.msg }

func clip(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return strings.TrimSpace(string(b))
}

// jsonString quotes s as a JSON string (bodies are built from pre-quoted pieces and the gid).
func jsonString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// ----------------------------------------------------------------------------- workloads

// sagaWorkload: one submit of a two-step saga with wait_result. withURLs=false is DTM's own
// benchmark shape (empty action/compensate URLs: no branch I/O); true calls the branch server twice.
func sagaWorkload(withURLs bool) func(c *client) txFunc {
	return func(c *client) txFunc {
		urls := [4]string{}
		body := `""`
		if withURLs {
			for i, op := range []string{"TransOut", "TransOutRevert", "TransIn", "TransInRevert"} {
				urls[i] = c.branch + "/" + op
			}
			body = jsonString(payload)
		}
		tail := `","trans_type":"saga","steps":[{"action":` + jsonString(urls[0]) + `,"compensate":` +
			jsonString(urls[1]) + `},{"action":` + jsonString(urls[2]) + `,"compensate":` + jsonString(urls[3]) +
			`}],"payloads":[` + body + `,` + body + `],"wait_result":true}`
		submit := c.api + "/submit"
		return func(c *client, gid string) error {
			return c.post("submit", submit, []byte(`{"gid":"`+gid+tail))
		}
	}
}

// msgWorkload: prepare, then submit with wait_result (the 2-phase message as the SDK sends it; the
// AP's local transaction between the two is empty). One branch, called by the coordinator on submit.
func msgWorkload(c *client) txFunc {
	common := `","trans_type":"msg","steps":[{"action":` + jsonString(c.branch+"/TransIn") + `}],"payloads":[` +
		jsonString(payload) + `],"query_prepared":` + jsonString(c.branch+"/QueryPrepared")
	prepare, submit := c.api+"/prepare", c.api+"/submit"
	return func(c *client, gid string) error {
		if err := c.post("prepare", prepare, []byte(`{"gid":"`+gid+common+`}`)); err != nil {
			return err
		}
		return c.post("submit", submit, []byte(`{"gid":"`+gid+common+`,"wait_result":true}`))
	}
}

type tccBranch struct {
	id, try, confirm, cancel string
}

// tccWorkload: prepare; per branch registerBranch then the client's own try call to the branch server
// (as DTM's SDKs do it); submit with wait_result, which makes the coordinator call both confirms.
// A failed step aborts the transaction, as the SDKs do.
func tccWorkload(c *client) txFunc {
	branches := []tccBranch{
		{"01", "TransOutTry", "TransOutConfirm", "TransOutRevert"},
		{"02", "TransInTry", "TransInConfirm", "TransInRevert"},
	}
	registerTail := make([]string, len(branches))
	for i, b := range branches {
		registerTail[i] = `","branch_id":"` + b.id + `","trans_type":"tcc","status":"prepared","data":` +
			jsonString(payload) + `,"confirm":` + jsonString(c.branch+"/"+b.confirm) + `,"cancel":` +
			jsonString(c.branch+"/"+b.cancel) + `}`
	}
	dtmParam := url.QueryEscape(c.api)
	prepare, register, submit, abort := c.api+"/prepare", c.api+"/registerBranch", c.api+"/submit", c.api+"/abort"
	return func(c *client, gid string) error {
		if err := c.post("prepare", prepare, []byte(`{"gid":"`+gid+`","trans_type":"tcc"}`)); err != nil {
			return err
		}
		for i, b := range branches {
			err := c.post("registerBranch", register, []byte(`{"gid":"`+gid+registerTail[i]))
			if err == nil {
				try := c.branch + "/" + b.try + "?dtm=" + dtmParam + "&gid=" + gid + "&branch_id=" + b.id +
					"&trans_type=tcc&op=try"
				err = c.post("try", try, []byte(payload))
			}
			if err != nil {
				_ = c.post("abort", abort, []byte(`{"gid":"`+gid+`","trans_type":"tcc","rollback_reason":"try failed"}`))
				return err
			}
		}
		return c.post("submit", submit, []byte(`{"gid":"`+gid+`","trans_type":"tcc","wait_result":true}`))
	}
}

// ----------------------------------------------------------------------------- verify

type verifyReport struct {
	Verify   string           `json:"verify"` // "ok" or "failed"
	Workload string           `json:"workload"`
	Gid      string           `json:"gid"`
	Status   string           `json:"status"`
	Branches []map[string]any `json:"branches"`
	Error    string           `json:"error,omitempty"`
}

// verify runs one transaction and reads it back: the reply alone does not prove the coordinator
// stored and finished it.
func verify(c *client, cfg config, tx txFunc) int {
	rep := verifyReport{Verify: "failed", Workload: cfg.workload, Gid: cfg.prefix + "-verify-" + cfg.workload}
	defer printJSON(&rep)
	if err := tx(c, rep.Gid); err != nil {
		rep.Error = err.Error()
		return 1
	}
	resp, err := c.http.Get(c.api + "/query?gid=" + url.QueryEscape(rep.Gid))
	if err != nil {
		rep.Error = "query: " + err.Error()
		return 1
	}
	defer resp.Body.Close()
	var got struct {
		Transaction *struct {
			Status string `json:"status"`
		} `json:"transaction"`
		Branches []map[string]any `json:"branches"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
		rep.Error = fmt.Sprintf("query: HTTP %d, %v", resp.StatusCode, err)
		return 1
	}
	for _, b := range got.Branches { // only what tells the flow apart
		rep.Branches = append(rep.Branches, map[string]any{"branch_id": b["branch_id"], "op": b["op"], "status": b["status"]})
	}
	if got.Transaction == nil {
		rep.Error = "query: transaction not found"
		return 1
	}
	rep.Status = got.Transaction.Status
	if rep.Status != "succeed" {
		rep.Error = "status is " + rep.Status + ", not succeed"
		return 1
	}
	rep.Verify = "ok"
	return 0
}

// ----------------------------------------------------------------------------- measure

type reason struct {
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

type report struct {
	Workload            string   `json:"workload"`
	Concurrency         int      `json:"concurrency"`
	WindowS             float64  `json:"window_s"`
	Count               int      `json:"count"`
	TPS                 float64  `json:"tps"`
	P50ms               float64  `json:"p50_ms"`
	P99ms               float64  `json:"p99_ms"`
	MaxMs               float64  `json:"max_ms"`
	Errors              int      `json:"errors"`
	ErrorReasons        []reason `json:"error_reasons"`
	ErrorsOutsideWindow int      `json:"errors_outside_window"`
	Stuck               int      `json:"stuck"` // goroutines still in a transaction after the grace time
}

type workerStats struct {
	latencies     []time.Duration
	errors        map[string]int
	outsideErrors int
}

func measure(c *client, cfg config, tx txFunc) *report {
	start := time.Now()
	windowStart := start.Add(cfg.warmup)
	windowEnd := windowStart.Add(cfg.duration)
	var stop atomic.Bool
	var seq atomic.Uint64
	stats := make([]*workerStats, cfg.concurrency)
	var wg sync.WaitGroup
	for i := range stats {
		ws := &workerStats{errors: map[string]int{}}
		stats[i] = ws
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				gid := cfg.prefix + "-" + strconv.FormatUint(seq.Add(1), 10)
				began := time.Now()
				err := tx(c, gid)
				ended := time.Now()
				inWindow := !ended.Before(windowStart) && ended.Before(windowEnd)
				switch {
				case err == nil && inWindow:
					ws.latencies = append(ws.latencies, ended.Sub(began))
				case err != nil && inWindow:
					ws.errors[strings.ReplaceAll(err.Error(), gid, "<gid>")]++
				case err != nil:
					ws.outsideErrors++
				}
				var te *txError
				if errors.As(err, &te) && te.network {
					time.Sleep(50 * time.Millisecond) // a refused connection would otherwise spin
				}
			}
		}()
	}
	time.Sleep(time.Until(windowStart))
	if cfg.markers {
		printJSON(map[string]string{"event": "window_start"})
	}
	time.Sleep(time.Until(windowEnd))
	if cfg.markers {
		printJSON(map[string]string{"event": "window_end"})
	}
	stop.Store(true)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	stuck := 0
	select {
	case <-done:
	case <-time.After(cfg.timeout*6 + 2*time.Second): // the longest transaction is 6 requests
		stuck = cfg.concurrency
	}
	if stuck > 0 {
		// Goroutines may still append: report what the window saw without reading their slices.
		return &report{Workload: cfg.workload, Concurrency: cfg.concurrency, WindowS: cfg.duration.Seconds(), Stuck: stuck}
	}
	return summarise(cfg, stats)
}

func summarise(cfg config, stats []*workerStats) *report {
	var all []time.Duration
	reasons := map[string]int{}
	rep := &report{Workload: cfg.workload, Concurrency: cfg.concurrency, WindowS: cfg.duration.Seconds()}
	for _, ws := range stats {
		all = append(all, ws.latencies...)
		for r, n := range ws.errors {
			reasons[r] += n
			rep.Errors += n
		}
		rep.ErrorsOutsideWindow += ws.outsideErrors
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	rep.Count = len(all)
	rep.TPS = float64(len(all)) / cfg.duration.Seconds()
	rep.P50ms, rep.P99ms = percentileMs(all, 0.50), percentileMs(all, 0.99)
	if len(all) > 0 {
		rep.MaxMs = ms(all[len(all)-1])
	}
	rep.ErrorReasons = []reason{}
	for r, n := range reasons {
		rep.ErrorReasons = append(rep.ErrorReasons, reason{r, n})
	}
	sort.Slice(rep.ErrorReasons, func(i, j int) bool { return rep.ErrorReasons[i].Count > rep.ErrorReasons[j].Count })
	if len(rep.ErrorReasons) > topReasons {
		rep.ErrorReasons = rep.ErrorReasons[:topReasons]
	}
	return rep
}

// percentileMs is the nearest-rank value at q of sorted latencies (the definition saga_bench.py uses).
func percentileMs(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)))
	if i > len(sorted)-1 {
		i = len(sorted) - 1
	}
	return ms(sorted[i])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

var stdoutMu sync.Mutex

func printJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	_, _ = os.Stdout.Write(append(b, '\n'))
}
