package main

// DTM's gRPC API: the saga-grpc workload (Submit on the coordinator's gRPC port, branches that are
// gRPC methods) and the gRPC branch server it calls (`loadgen grpc-branch`).
//
// The DtmRequest is the DTM client SDK's own generated message (dtmgpb, client v1.17.3), sent with a
// plain ClientConn.Invoke on one shared connection: what dtmgrpc.NewSagaGrpc(...).Submit() puts on the
// wire, without the SDK's per-call work (its transaction object, the steps marshalled with
// encoding/json, its logging interceptor). The same bytes and the same client cost for both
// coordinators.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/dtm-labs/client/dtmgrpc/dtmgpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// grpcService is the branch server's service; its methods answer OK with an empty reply.
const grpcService = "busi.Busi"

var grpcMethods = []string{"TransOut", "TransOutRevert", "TransIn", "TransInRevert"}

// grpcPayload is the branch payload of saga-grpc: the protobuf encoding of a message with field 1 =
// 30 (DTM's examples send busi.BusiReq{Amount: 30}). The branch server decodes it as an Empty, which
// keeps it as an unknown field.
var grpcPayload = []byte{0x08, 30}

// dialGrpc opens the load generator's one connection to the coordinator's gRPC port (one HTTP/2
// connection carries every goroutine's calls, as the SDK's cached connection does). Dialling is lazy:
// an unreachable port shows up as errors of the first calls.
func dialGrpc(target string) (*grpc.ClientConn, error) {
	return grpc.Dial(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// grpcSagaWorkload: Submit of a two-step saga with wait_result, as saga-http, but on the coordinator's
// gRPC port, and the four branch URLs are methods of the gRPC branch server
// (`host:port/busi.Busi/TransOut`, ...), which the coordinator calls with the payloads' bytes.
func grpcSagaWorkload(c *client) txFunc {
	urls := make([]string, len(grpcMethods))
	for i, m := range grpcMethods {
		urls[i] = c.grpcBranch + "/" + grpcService + "/" + m
	}
	steps := `[{"action":` + jsonString(urls[0]) + `,"compensate":` + jsonString(urls[1]) + `},{"action":` +
		jsonString(urls[2]) + `,"compensate":` + jsonString(urls[3]) + `}]`
	payloads := [][]byte{grpcPayload, grpcPayload}
	options := &dtmgpb.DtmTransOptions{WaitResult: true}
	return func(c *client, gid string) error {
		req := &dtmgpb.DtmRequest{Gid: gid, TransType: "saga", TransOptions: options, BinPayloads: payloads, Steps: steps}
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		return grpcError("Submit", c.grpc.Invoke(ctx, "/dtmgimp.Dtm/Submit", req, &emptypb.Empty{}))
	}
}

// grpcError: OK is success; any other status is the step's error, and one that never reached the
// server's handler (Unavailable, no connection) backs the goroutine off like a refused HTTP connection.
func grpcError(step string, err error) error {
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	return &txError{
		step:    step,
		msg:     fmt.Sprintf("gRPC %s: %s", st.Code(), clip([]byte(st.Message()), 160)),
		network: st.Code() == codes.Unavailable,
	}
}

// ----------------------------------------------------------------------------- branch server

// grpcBranchMain runs the gRPC branch server until SIGTERM or SIGINT: `loadgen grpc-branch -listen ADDR`.
func grpcBranchMain(args []string) int {
	fs := flag.NewFlagSet("grpc-branch", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "loadgen grpc-branch: unexpected arguments %q\n", fs.Args())
		return 2
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen grpc-branch:", err)
		return 1
	}
	srv := grpc.NewServer()
	srv.RegisterService(branchServiceDesc(), nil)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		srv.Stop()
	}()
	fmt.Fprintf(os.Stderr, "loadgen grpc-branch: %s on %s\n", grpcService, lis.Addr())
	if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		fmt.Fprintln(os.Stderr, "loadgen grpc-branch:", err)
		return 1
	}
	return 0
}

// branchServiceDesc registers busi.Busi by hand (no protoc): every method takes any protobuf message
// (read as an Empty, unknown fields kept) and answers an Empty with status OK, DTM's SUCCESS.
func branchServiceDesc() *grpc.ServiceDesc {
	desc := &grpc.ServiceDesc{ServiceName: grpcService, HandlerType: (*any)(nil), Metadata: "loadgen/grpc.go"}
	for _, m := range grpcMethods {
		desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: m, Handler: answerOK})
	}
	return desc
}

func answerOK(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	if err := dec(&emptypb.Empty{}); err != nil {
		return nil, status.Error(codes.InvalidArgument, strings.TrimSpace(err.Error()))
	}
	return &emptypb.Empty{}, nil
}
