package interop

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/go-redis/redis/v8"
)

const barrierExpire = 600

// redisClient connects to REDIS_ADDR (host:port or redis://...), or skips when it is not set.
func redisClient(t *testing.T) *redis.Client {
	t.Helper()
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		t.Skip("REDIS_ADDR is not set")
	}
	opts := &redis.Options{Addr: addr}
	if strings.Contains(addr, "://") {
		parsed, err := redis.ParseURL(addr)
		if err != nil {
			t.Fatalf("REDIS_ADDR %q: %v", addr, err)
		}
		opts = parsed
	}
	rd := redis.NewClient(opts)
	t.Cleanup(func() { _ = rd.Close() })
	if err := rd.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis %s: %v", addr, err)
	}
	return rd
}

type barrierReq struct {
	Key    string `json:"key"`
	Amount int    `json:"amount"`
}

// barrierBusi answers every path with RedisCheckAdjustAmount(key, ±amount) under the branch barrier;
// paths ending in "Revert" undo the amount.
func barrierBusi(t *testing.T, rd *redis.Client, paths ...string) *busi {
	b := newBusi(t)
	for _, p := range paths {
		sign := 1
		if strings.HasSuffix(p, "Revert") {
			sign = -1
		}
		b.on(p, func(r *http.Request, raw []byte) int {
			var req barrierReq
			if err := json.Unmarshal(raw, &req); err != nil {
				t.Errorf("bad body %q: %v", raw, err)
				return 500
			}
			bb, err := dtmcli.BarrierFromQuery(r.URL.Query())
			if err == nil {
				err = bb.RedisCheckAdjustAmount(rd, req.Key, sign*req.Amount, barrierExpire)
			}
			if errors.Is(err, dtmcli.ErrFailure) {
				return 409
			}
			if err != nil {
				t.Errorf("barrier: %v", err)
				return 500
			}
			return 200
		})
	}
	return b
}

func accounts(t *testing.T, rd *redis.Client, gid string) (string, string) {
	t.Helper()
	out, in := "busi-"+gid+"-out", "busi-"+gid+"-in"
	ctx := context.Background()
	if err := rd.Set(ctx, out, 100, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rd.Set(ctx, in, 0, 0).Err(); err != nil {
		t.Fatal(err)
	}
	return out, in
}

func balance(t *testing.T, rd *redis.Client, key string) int {
	t.Helper()
	v, err := rd.Get(context.Background(), key).Int()
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return v
}

// A saga whose branches use the Redis barrier: the transfer happens once; a failing TransIn is rolled back,
// its own compensation being a null compensation.
func TestBarrierRedisSaga(t *testing.T) {
	t.Parallel()
	dtm, rd := dtmURL(t), redisClient(t)
	b := barrierBusi(t, rd, "/TransOut", "/TransOutRevert", "/TransIn", "/TransInRevert")
	// TransOut answers 500 once after doing its work: the server's retry must be absorbed by the barrier.
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
	}{{"normal", 30, "succeed", 70, 30}, {"rollback", -1000, "failed", 100, 0}} {
		gid := dtmcli.MustGenGid(dtm)
		out, in := accounts(t, rd, gid)
		saga := dtmcli.NewSaga(dtm, gid).
			Add(b.url("/TransOut"), b.url("/TransOutRevert"), barrierReq{out, -30}).
			Add(b.url("/TransIn"), b.url("/TransInRevert"), barrierReq{in, tc.inAmount})
		if err := saga.Submit(); err != nil {
			t.Fatalf("%s: submit: %v", tc.name, err)
		}
		waitStatus(t, gid, tc.status)
		assertEqual(t, tc.name+": out balance", balance(t, rd, out), tc.wantOut)
		assertEqual(t, tc.name+": in balance", balance(t, rd, in), tc.wantIn)
		if tc.name == "normal" {
			assertEqual(t, "TransOut calls (one retried after a 500)", b.countOf(gid, "/TransOut"), 2)
		}
	}
}

// Msg DoAndSubmit with the Redis barrier: the local step and the message commit together, or neither.
func TestBarrierRedisMsgDoAndSubmit(t *testing.T) {
	t.Parallel()
	dtm, rd := dtmURL(t), redisClient(t)
	b := barrierBusi(t, rd, "/TransIn")
	b.on("/QueryPrepared", func(r *http.Request, _ []byte) int {
		bb, err := dtmcli.BarrierFromQuery(r.URL.Query())
		if err == nil {
			err = bb.RedisQueryPrepared(rd, barrierExpire)
		}
		if errors.Is(err, dtmcli.ErrFailure) {
			return 409
		}
		if err != nil {
			return 500
		}
		return 200
	})
	for _, tc := range []struct {
		name            string
		outAmount       int
		status          string
		wantOut, wantIn int
	}{{"normal", 30, "succeed", 70, 30}, {"insufficient", 1000, "failed", 100, 0}} {
		gid := dtmcli.MustGenGid(dtm)
		out, in := accounts(t, rd, gid)
		msg := dtmcli.NewMsg(dtm, gid).Add(b.url("/TransIn"), barrierReq{in, tc.outAmount})
		err := msg.DoAndSubmit(b.url("/QueryPrepared"), func(bb *dtmcli.BranchBarrier) error {
			return bb.RedisCheckAdjustAmount(rd, out, -tc.outAmount, barrierExpire)
		})
		if tc.status == "succeed" && err != nil {
			t.Fatalf("%s: DoAndSubmit: %v", tc.name, err)
		}
		if tc.status == "failed" && !errors.Is(err, dtmcli.ErrFailure) {
			t.Fatalf("%s: DoAndSubmit: got %v, want ErrFailure", tc.name, err)
		}
		waitStatus(t, gid, tc.status)
		assertEqual(t, tc.name+": out balance", balance(t, rd, out), tc.wantOut)
		assertEqual(t, tc.name+": in balance", balance(t, rd, in), tc.wantIn)
		assertEqual(t, tc.name+": QueryPrepared calls", len(b.callsOf(gid))-b.countOf(gid, "/TransIn"), 0)
	}
}
