package interop

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/dtm-labs/client/dtmgrpc"
	"github.com/go-redis/redis/v8"
	"google.golang.org/grpc/codes"
)

// The Redis barrier behind gRPC branches: dtmgrpc.BarrierFromGrpc reads the barrier from the dtm-* metadata the
// server sends, so a retried call is applied once and a compensation of an action that never applied is a
// no-op. Balances live in REDIS_ADDR (these tests skip without it).

func barrierTransfer(key string, amount int) map[string]interface{} {
	return map[string]interface{}{"key": key, "amount": amount}
}

// grpcResult maps a barrier's error to a branch answer: ErrFailure is Aborted; an unexpected error fails the
// test and is returned as is (an Unknown status, which the server retries).
func grpcResult(t *testing.T, what string, err error) error {
	if err != nil && !errors.Is(err, dtmcli.ErrFailure) {
		t.Errorf("%s: %v", what, err)
	}
	return dtmgrpc.DtmError2GrpcError(err)
}

// grpcBarrierBusi answers every method with RedisCheckAdjustAmount(key, ±amount) under the call's barrier
// (methods ending in "Revert" undo the amount), and QueryPrepared with the msg barrier's RedisQueryPrepared.
func grpcBarrierBusi(t *testing.T, rd *redis.Client, methods ...string) *grpcBusi {
	b := newGrpcBusi(t)
	for _, m := range methods {
		sign := 1
		if strings.HasSuffix(m, "Revert") {
			sign = -1
		}
		b.on(m, func(ctx context.Context, payload []byte) error {
			req, err := decodeTransfer(payload)
			if err != nil {
				return err
			}
			key, amount := req.Fields["key"].GetStringValue(), int(req.Fields["amount"].GetNumberValue())
			bb, err := dtmgrpc.BarrierFromGrpc(ctx)
			if err == nil {
				err = bb.RedisCheckAdjustAmount(rd, key, sign*amount, barrierExpire)
			}
			return grpcResult(t, "barrier", err)
		})
	}
	b.on("QueryPrepared", func(ctx context.Context, _ []byte) error {
		bb, err := dtmgrpc.BarrierFromGrpc(ctx)
		if err == nil {
			err = bb.RedisQueryPrepared(rd, barrierExpire)
		}
		return grpcResult(t, "QueryPrepared", err)
	})
	return b
}

// A saga whose branches use the Redis barrier: the transfer happens once although TransOut is called twice; a
// failing TransIn is rolled back, its own compensation being a null compensation.
func TestGrpcBarrierRedisSaga(t *testing.T) {
	t.Parallel()
	dtm, rd := dtmGRPC(t), redisClient(t)
	dtmURL(t)
	b := grpcBarrierBusi(t, rd, "TransOut", "TransOutRevert", "TransIn", "TransInRevert")
	// TransOut answers Unavailable once after doing its work: the server's retry must be absorbed by the barrier.
	var retried atomic.Bool
	inner := b.handlers["TransOut"]
	b.on("TransOut", func(ctx context.Context, payload []byte) error {
		err := inner(ctx, payload)
		if err == nil && retried.CompareAndSwap(false, true) {
			return answer(codes.Unavailable)
		}
		return err
	})
	for _, tc := range []struct {
		name            string
		inAmount        int
		status          string
		wantOut, wantIn int
		calls           []string
	}{
		{"normal", 30, "succeed", 70, 30, []string{"TransOut(01,action)", "TransOut(01,action)", "TransIn(02,action)"}},
		{"rollback", -1000, "failed", 100, 0, []string{
			"TransOut(01,action)", "TransIn(02,action)", "TransInRevert(02,compensate)", "TransOutRevert(01,compensate)",
		}},
	} {
		gid := grpcGid(t, dtm)
		out, in := accounts(t, rd, gid)
		saga := dtmgrpc.NewSagaGrpc(dtm, gid).
			Add(b.url("TransOut"), b.url("TransOutRevert"), transfer(barrierTransfer(out, -30))).
			Add(b.url("TransIn"), b.url("TransInRevert"), transfer(barrierTransfer(in, tc.inAmount)))
		saga.Context = bounded(t)
		saga.RetryInterval = 1 // Go DTM's server-wide interval cannot go under 10 s
		if err := saga.Submit(); err != nil {
			t.Fatalf("%s: submit: %v", tc.name, err)
		}
		waitStatus(t, gid, tc.status)
		assertEqual(t, tc.name+": out balance", balance(t, rd, out), tc.wantOut)
		assertEqual(t, tc.name+": in balance", balance(t, rd, in), tc.wantIn)
		assertSeq(t, tc.name+": busi calls", b.sequence(gid), tc.calls)
	}
}

// Msg DoAndSubmit with the Redis barrier: the local step and the message commit together, or neither.
func TestGrpcBarrierRedisMsgDoAndSubmit(t *testing.T) {
	t.Parallel()
	dtm, rd := dtmGRPC(t), redisClient(t)
	dtmURL(t)
	b := grpcBarrierBusi(t, rd, "TransIn")
	for _, tc := range []struct {
		name            string
		amount          int
		status          string
		wantOut, wantIn int
		calls           []string
	}{
		{"normal", 30, "succeed", 70, 30, []string{"TransIn(01,action)"}},
		{"insufficient", 1000, "failed", 100, 0, nil},
	} {
		gid := grpcGid(t, dtm)
		out, in := accounts(t, rd, gid)
		msg := dtmgrpc.NewMsgGrpc(dtm, gid).Add(b.url("TransIn"), transfer(barrierTransfer(in, tc.amount)))
		msg.Context = bounded(t)
		err := msg.DoAndSubmit(b.url("QueryPrepared"), func(bb *dtmcli.BranchBarrier) error {
			return bb.RedisCheckAdjustAmount(rd, out, -tc.amount, barrierExpire)
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
		assertSeq(t, tc.name+": busi calls", b.sequence(gid), tc.calls)
	}
}

// A prepared msg whose AP never submits: the server's gRPC check-back reaches QueryPrepared, where the msg
// barrier tells whether the local step committed (submit) or not (fail; and the barrier now bars it).
func TestGrpcBarrierRedisMsgCheckBack(t *testing.T) {
	t.Parallel()
	dtm, rd := dtmGRPC(t), redisClient(t)
	dtmURL(t)
	b := grpcBarrierBusi(t, rd, "TransIn")
	for _, tc := range []struct {
		name            string
		localDone       bool
		status          string
		wantOut, wantIn int
		calls           []string
	}{
		{"local step committed", true, "succeed", 70, 30, []string{"QueryPrepared(00,msg)", "TransIn(01,action)"}},
		{"local step never ran", false, "failed", 100, 0, []string{"QueryPrepared(00,msg)"}},
	} {
		gid := grpcGid(t, dtm)
		out, in := accounts(t, rd, gid)
		msg := dtmgrpc.NewMsgGrpc(dtm, gid).Add(b.url("TransIn"), transfer(barrierTransfer(in, 30)))
		msg.Context = bounded(t)
		msg.TimeoutToFail = 1 // see TestGrpcMsgCheckBack
		msg.RetryInterval = 2
		if err := msg.Prepare(b.url("QueryPrepared")); err != nil {
			t.Fatalf("%s: prepare: %v", tc.name, err)
		}
		if tc.localDone {
			bb, err := dtmcli.BarrierFrom("msg", gid, "00", "msg")
			if err == nil {
				err = bb.RedisCheckAdjustAmount(rd, out, -30, barrierExpire)
			}
			if err != nil {
				t.Fatalf("%s: local step: %v", tc.name, err)
			}
		}
		waitStatus(t, gid, tc.status)
		assertEqual(t, tc.name+": out balance", balance(t, rd, out), tc.wantOut)
		assertEqual(t, tc.name+": in balance", balance(t, rd, in), tc.wantIn)
		assertSeq(t, tc.name+": busi calls", b.sequence(gid), tc.calls)
		if !tc.localDone {
			// The check-back left its mark in the barrier: a local step arriving late is refused as a duplicate.
			bb, err := dtmcli.BarrierFrom("msg", gid, "00", "msg")
			if err == nil {
				err = bb.RedisCheckAdjustAmount(rd, out, -30, barrierExpire)
			}
			if !errors.Is(err, dtmcli.ErrDuplicated) {
				t.Fatalf("%s: late local step: got %v, want ErrDuplicated", tc.name, err)
			}
			assertEqual(t, tc.name+": out balance after a late local step", balance(t, rd, out), 100)
		}
	}
}
