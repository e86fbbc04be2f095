package interop

import (
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/go-resty/resty/v2"
	_ "github.com/go-sql-driver/mysql" // the "mysql" driver dtmcli's XA and SQL barrier open
)

// The MariaDB the suite starts (tests/support/mariadb.py): root over TCP with an empty password. pytest
// recreates dtm_barrier.barrier and dtm_busi.user_account before every run; each test here adds its own
// accounts, so tests running in parallel never share a row.
const (
	envMariaDBHost = "MARIADB_HOST"
	envMariaDBPort = "MARIADB_PORT"
	busiDB         = "dtm_busi"
	startBalance   = 1000
)

var sqlSetup sync.Once

// mariaDBConf is the dtm_busi database of MARIADB_HOST:MARIADB_PORT, or a skip when they are not set.
func mariaDBConf(t *testing.T) dtmcli.DBConf {
	t.Helper()
	host, portText := os.Getenv(envMariaDBHost), os.Getenv(envMariaDBPort)
	if host == "" || portText == "" {
		t.Skip(envMariaDBHost + " / " + envMariaDBPort + " are not set")
	}
	port, err := strconv.ParseInt(portText, 10, 64)
	if err != nil {
		t.Fatalf("%s %q: %v", envMariaDBPort, portText, err)
	}
	sqlSetup.Do(func() {
		dtmcli.SetCurrentDBType(dtmcli.DBTypeMysql)
		dtmcli.SetBarrierTableName("dtm_barrier.barrier")
	})
	return dtmcli.DBConf{Driver: dtmcli.DBTypeMysql, Host: host, Port: port, User: "root", Password: "", Db: busiDB}
}

// openBusiDB opens dtm_busi (autocommit on; the barrier begins its own transactions).
func openBusiDB(t *testing.T, conf dtmcli.DBConf) *sql.DB {
	t.Helper()
	dsn := "root:@tcp(" + conf.Host + ":" + strconv.FormatInt(conf.Port, 10) + ")/" + conf.Db +
		"?charset=utf8mb4&parseTime=true&interpolateParams=true&timeout=5s&readTimeout=30s&writeTimeout=30s"
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Ping(); err != nil {
		t.Fatalf("ping MariaDB: %v", err)
	}
	return db
}

var nextUser atomic.Int64

func init() { nextUser.Store(time.Now().UnixNano()%1_000_000*100 + 1000) }

// newAccounts creates two accounts holding startBalance and returns their user ids (out, in).
func newAccounts(t *testing.T, db *sql.DB) (int64, int64) {
	t.Helper()
	out, in := nextUser.Add(1), nextUser.Add(1)
	for _, u := range []int64{out, in} {
		_, err := db.Exec("INSERT INTO user_account (user_id, balance) VALUES (?, ?) "+
			"ON DUPLICATE KEY UPDATE balance = VALUES(balance), trading_balance = 0", u, startBalance)
		if err != nil {
			t.Fatalf("create account %d: %v", u, err)
		}
	}
	return out, in
}

func accountBalance(t *testing.T, db *sql.DB, user int64) int {
	t.Helper()
	var bal float64
	if err := db.QueryRow("SELECT balance FROM user_account WHERE user_id = ?", user).Scan(&bal); err != nil {
		t.Fatalf("balance of %d: %v", user, err)
	}
	return int(bal)
}

// adjust moves amount into user's balance, refusing (ErrFailure) to overdraw.
func adjust(q interface {
	Exec(string, ...interface{}) (sql.Result, error)
}, user int64, amount int) error {
	res, err := q.Exec("UPDATE user_account SET balance = balance + ? WHERE user_id = ? AND balance + ? >= 0",
		amount, user, amount)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return dtmcli.ErrFailure
	}
	return nil
}

type sqlReq struct {
	User   int64 `json:"user"`
	Amount int   `json:"amount"`
}

func decodeSQLReq(t *testing.T, raw []byte) (sqlReq, bool) {
	var req sqlReq
	if err := json.Unmarshal(raw, &req); err != nil {
		t.Errorf("bad body %q: %v", raw, err)
		return req, false
	}
	return req, true
}

// codeOf maps an SDK error to the HTTP answer of a branch.
func codeOf(t *testing.T, what string, err error) int {
	switch {
	case err == nil:
		return 200
	case errors.Is(err, dtmcli.ErrFailure):
		return 409
	default:
		t.Errorf("%s: %v", what, err)
		return 500
	}
}

// xaBusi serves /TransOutXa and /TransInXa through XaLocalTransaction: op=action runs the business SQL inside
// the XA branch; op=commit|rollback (the server's phase-2 POST to the registered url) finishes it.
func xaBusi(t *testing.T, conf dtmcli.DBConf) *busi {
	b := newBusi(t)
	for path, sign := range map[string]int{"/TransOutXa": -1, "/TransInXa": 1} {
		sign := sign
		b.on(path, func(r *http.Request, raw []byte) int {
			qs := r.URL.Query()
			if op := qs.Get("op"); op == "commit" || op == "rollback" {
				return codeOf(t, "xa phase 2", dtmcli.XaLocalTransaction(qs, conf, nil))
			}
			req, ok := decodeSQLReq(t, raw)
			if !ok {
				return 500
			}
			err := dtmcli.XaLocalTransaction(qs, conf, func(db *sql.DB, xa *dtmcli.Xa) error {
				return adjust(db, req.User, sign*req.Amount)
			})
			return codeOf(t, "xa action", err)
		})
	}
	return b
}

// preparedXids lists the XA transactions MariaDB holds prepared for gid.
func preparedXids(t *testing.T, db *sql.DB, gid string) []string {
	t.Helper()
	rows, err := db.Query("XA RECOVER")
	if err != nil {
		t.Fatalf("XA RECOVER: %v", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var format, gtridLen, bqualLen int
		var data string
		if err := rows.Scan(&format, &gtridLen, &bqualLen, &data); err != nil {
			t.Fatalf("XA RECOVER row: %v", err)
		}
		if strings.HasPrefix(data, gid+"-") {
			out = append(out, data)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("XA RECOVER: %v", err)
	}
	return out
}

// S29: XaGlobalTransaction with RMs using XaLocalTransaction on MariaDB.
func TestXaMariaDB(t *testing.T) {
	t.Parallel()
	dtm, conf := dtmURL(t), mariaDBConf(t)
	db := openBusiDB(t, conf)
	b := xaBusi(t, conf)
	for _, tc := range []struct {
		name            string
		inAmount        int
		status          string
		statuses        string
		wantOut, wantIn int
		phase2          []string
	}{
		{"normal", 30, "succeed", "psps", startBalance - 30, startBalance + 30,
			[]string{"/TransOutXa(01,commit)", "/TransInXa(02,commit)"}},
		// TransIn refuses to overdraw its account: it never registers, TransOut's XA branch is rolled back.
		{"rollback", -startBalance - 1, "failed", "sp", startBalance, startBalance,
			[]string{"/TransOutXa(01,rollback)"}},
	} {
		gid := dtmcli.MustGenGid(dtm)
		out, in := newAccounts(t, db)
		err := dtmcli.XaGlobalTransaction(dtm, gid, func(xa *dtmcli.Xa) (*resty.Response, error) {
			if resp, err := xa.CallBranch(sqlReq{out, 30}, b.url("/TransOutXa")); err != nil {
				return resp, err
			}
			return xa.CallBranch(sqlReq{in, tc.inAmount}, b.url("/TransInXa"))
		})
		if tc.status == "succeed" && err != nil {
			t.Fatalf("%s: XaGlobalTransaction: %v", tc.name, err)
		}
		if tc.status == "failed" && !errors.Is(err, dtmcli.ErrFailure) {
			t.Fatalf("%s: XaGlobalTransaction: got %v, want ErrFailure", tc.name, err)
		}
		q := waitStatus(t, gid, tc.status)
		assertEqual(t, tc.name+": trans_type", q.Transaction.TransType, "xa")
		assertEqual(t, tc.name+": branch statuses", q.statuses(), tc.statuses)
		waitFor(t, tc.name+": phase-2 calls", func() bool { return len(phase2Calls(b, gid)) >= len(tc.phase2) })
		assertSeq(t, tc.name+": phase-2 calls", phase2Calls(b, gid), tc.phase2)
		for _, c := range b.callsOf(gid) {
			assertEqual(t, tc.name+": method", c.Method, http.MethodPost)
			assertEqual(t, tc.name+": trans_type", c.Query.Get("trans_type"), "xa")
			if c.Op == "action" {
				assertEqual(t, tc.name+": phase2_url", c.Query.Get("phase2_url"), b.url(c.Path))
			} else {
				assertEqual(t, tc.name+": phase-2 body", string(c.Body), "")
			}
		}
		assertEqual(t, tc.name+": out balance", accountBalance(t, db, out), tc.wantOut)
		assertEqual(t, tc.name+": in balance", accountBalance(t, db, in), tc.wantIn)
		assertEqual(t, tc.name+": prepared XA transactions", strings.Join(preparedXids(t, db, gid), ","), "")
	}
}

func phase2Calls(b *busi, gid string) []string {
	var out []string
	for _, s := range b.sequence(gid) {
		if !strings.HasSuffix(s, ",action)") {
			out = append(out, s)
		}
	}
	return out
}

// sqlBarrierBusi answers every path with a balance change under the SQL barrier; paths ending in "Revert"
// undo the amount.
func sqlBarrierBusi(t *testing.T, db *sql.DB, paths ...string) *busi {
	b := newBusi(t)
	for _, p := range paths {
		sign := 1
		if strings.HasSuffix(p, "Revert") {
			sign = -1
		}
		b.on(p, func(r *http.Request, raw []byte) int {
			req, ok := decodeSQLReq(t, raw)
			if !ok {
				return 500
			}
			bb, err := dtmcli.BarrierFromQuery(r.URL.Query())
			if err == nil {
				err = bb.CallWithDB(db, func(tx *sql.Tx) error { return adjust(tx, req.User, sign*req.Amount) })
			}
			return codeOf(t, "barrier", err)
		})
	}
	b.on("/QueryPrepared", func(r *http.Request, _ []byte) int {
		bb, err := dtmcli.BarrierFromQuery(r.URL.Query())
		if err == nil {
			err = bb.QueryPrepared(db)
		}
		return codeOf(t, "QueryPrepared", err)
	})
	return b
}

// A saga whose branches use the SQL barrier on MariaDB: a duplicate delivery is applied once, and a failing
// TransIn is rolled back (its own compensation being a null compensation).
func TestBarrierMariaDBSaga(t *testing.T) {
	t.Parallel()
	dtm, conf := dtmURL(t), mariaDBConf(t)
	db := openBusiDB(t, conf)
	b := sqlBarrierBusi(t, db, "/TransOut", "/TransOutRevert", "/TransIn", "/TransInRevert")
	// TransOut answers 500 once after committing its work: the server's retry must be absorbed by the barrier.
	var retried atomic.Bool
	b.on("/TransOut", func(inner handlerFunc) handlerFunc {
		return func(r *http.Request, raw []byte) int {
			code := inner(r, raw)
			if code == 200 && retried.CompareAndSwap(false, true) {
				return 500
			}
			return code
		}
	}(b.handlers["/TransOut"]))
	for _, tc := range []struct {
		name            string
		inAmount        int
		status          string
		wantOut, wantIn int
	}{{"normal", 30, "succeed", startBalance - 30, startBalance + 30}, {"rollback", -startBalance - 1, "failed", startBalance, startBalance}} {
		gid := dtmcli.MustGenGid(dtm)
		out, in := newAccounts(t, db)
		saga := dtmcli.NewSaga(dtm, gid).
			Add(b.url("/TransOut"), b.url("/TransOutRevert"), sqlReq{out, -30}).
			Add(b.url("/TransIn"), b.url("/TransInRevert"), sqlReq{in, tc.inAmount})
		if err := saga.Submit(); err != nil {
			t.Fatalf("%s: submit: %v", tc.name, err)
		}
		waitStatus(t, gid, tc.status)
		assertEqual(t, tc.name+": out balance", accountBalance(t, db, out), tc.wantOut)
		assertEqual(t, tc.name+": in balance", accountBalance(t, db, in), tc.wantIn)
		if tc.name == "normal" {
			assertEqual(t, "TransOut calls (one retried after a 500)", b.countOf(gid, "/TransOut"), 2)
		} else {
			assertSeq(t, "rollback calls", b.sequence(gid), []string{
				"/TransOut(01,action)", "/TransIn(02,action)", "/TransInRevert(02,compensate)",
				"/TransOutRevert(01,compensate)",
			})
		}
	}
}

// Msg DoAndSubmitDB with the SQL barrier: the local step and the message commit together, or neither; and a
// prepared msg whose AP never submits is settled by the server's check-back, answered by QueryPrepared.
func TestBarrierMariaDBMsg(t *testing.T) {
	t.Parallel()
	dtm, conf := dtmURL(t), mariaDBConf(t)
	db := openBusiDB(t, conf)
	b := sqlBarrierBusi(t, db, "/TransIn")
	for _, tc := range []struct {
		name            string
		outAmount       int
		status          string
		wantOut, wantIn int
	}{{"normal", 30, "succeed", startBalance - 30, startBalance + 30}, {"insufficient", startBalance + 1, "failed", startBalance, startBalance}} {
		gid := dtmcli.MustGenGid(dtm)
		out, in := newAccounts(t, db)
		msg := dtmcli.NewMsg(dtm, gid).Add(b.url("/TransIn"), sqlReq{in, tc.outAmount})
		err := msg.DoAndSubmitDB(b.url("/QueryPrepared"), db, func(tx *sql.Tx) error {
			return adjust(tx, out, -tc.outAmount)
		})
		if tc.status == "succeed" && err != nil {
			t.Fatalf("%s: DoAndSubmitDB: %v", tc.name, err)
		}
		if tc.status == "failed" && !errors.Is(err, dtmcli.ErrFailure) {
			t.Fatalf("%s: DoAndSubmitDB: got %v, want ErrFailure", tc.name, err)
		}
		waitStatus(t, gid, tc.status)
		assertEqual(t, tc.name+": out balance", accountBalance(t, db, out), tc.wantOut)
		assertEqual(t, tc.name+": in balance", accountBalance(t, db, in), tc.wantIn)
		assertEqual(t, tc.name+": QueryPrepared calls", b.countOf(gid, "/QueryPrepared"), 0)
	}

	// The AP prepares, (maybe) commits its local step under the msg barrier, then "crashes" before submit.
	for _, tc := range []struct {
		name            string
		localDone       bool
		status          string
		wantOut, wantIn int
	}{{"check-back committed", true, "succeed", startBalance - 30, startBalance + 30}, {"check-back never ran", false, "failed", startBalance, startBalance}} {
		gid := dtmcli.MustGenGid(dtm)
		out, in := newAccounts(t, db)
		msg := dtmcli.NewMsg(dtm, gid).Add(b.url("/TransIn"), sqlReq{in, 30})
		msg.TimeoutToFail = 2 // room for the local step to commit before the check-back
		msg.RetryInterval = 1
		if err := msg.Prepare(b.url("/QueryPrepared")); err != nil {
			t.Fatalf("%s: prepare: %v", tc.name, err)
		}
		if tc.localDone {
			bb, err := dtmcli.BarrierFrom("msg", gid, "00", "msg")
			if err == nil {
				err = bb.CallWithDB(db, func(tx *sql.Tx) error { return adjust(tx, out, -30) })
			}
			if err != nil {
				t.Fatalf("%s: local step: %v", tc.name, err)
			}
		}
		waitStatus(t, gid, tc.status)
		assertEqual(t, tc.name+": out balance", accountBalance(t, db, out), tc.wantOut)
		assertEqual(t, tc.name+": in balance", accountBalance(t, db, in), tc.wantIn)
		checks := 0
		for _, c := range b.callsOf(gid) {
			if c.Path == "/QueryPrepared" {
				checks++
				assertEqual(t, tc.name+": check-back method", c.Method, http.MethodGet)
				assertEqual(t, tc.name+": check-back branch_id", c.BranchID, "00")
				assertEqual(t, tc.name+": check-back op", c.Op, "msg")
			}
		}
		if checks == 0 {
			t.Fatalf("%s: the server never called QueryPrepared", tc.name)
		}
	}
}
