package interop

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc/dtmgimp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// busiService is the gRPC service name of the branch servers: branch URLs are host:port/busi.Busi/<Method>.
const busiService = "busi.Busi"

// busiMethods are the methods every gRPC busi serves; what each answers is up to the test.
var busiMethods = []string{
	"TransOut", "TransOutRevert", "TransIn", "TransInRevert",
	"TransOutTry", "TransOutConfirm", "TransOutCancel", "TransInTry", "TransInConfirm", "TransInCancel",
	"NestedTry", "NestedConfirm", "NestedCancel",
	"TransOutXa", "TransInXa", "QueryPrepared",
}

// dtmGRPC is the gRPC address of the server under test, e.g. 127.0.0.1:36790.
func dtmGRPC(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("DTM_GRPC")
	if addr == "" {
		t.Skip("DTM_GRPC is not set")
	}
	return addr
}

// bounded is a context that ends after waitTimeout, so no SDK call to the server can hang a test.
func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// grpcGid asks the server for a gid over gRPC (the NewGid RPC behind dtmgrpc.MustGenGid, minus its panic).
func grpcGid(t *testing.T, dtm string) string {
	t.Helper()
	reply, err := dtmgimp.MustGetDtmClient(dtm).NewGid(bounded(t), &emptypb.Empty{})
	if err != nil {
		t.Fatalf("NewGid over gRPC: %v", err)
	}
	if reply.Gid == "" {
		t.Fatalf("NewGid over gRPC returned an empty gid")
	}
	return reply.Gid
}

// grpcCall is one call a gRPC server received.
type grpcCall struct {
	Method    string // the method name alone, e.g. "TransIn"
	Gid       string
	TransType string
	BranchID  string
	Op        string
	MD        metadata.MD
	Payload   []byte
	At        time.Time
	Timeout   time.Duration // what was left of the caller's deadline on arrival; 0 without one
}

func (c grpcCall) meta(key string) string {
	if v := c.MD.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func newGrpcCall(ctx context.Context, method string, payload []byte) grpcCall {
	md, _ := metadata.FromIncomingContext(ctx)
	c := grpcCall{Method: method, MD: md, Payload: payload, At: time.Now()}
	if deadline, ok := ctx.Deadline(); ok {
		c.Timeout = time.Until(deadline)
	}
	c.Gid, c.TransType, c.BranchID, c.Op = c.meta("dtm-gid"), c.meta("dtm-trans_type"), c.meta("dtm-branch_id"), c.meta("dtm-op")
	return c
}

// grpcLog records calls in arrival order.
type grpcLog struct {
	mu    sync.Mutex
	calls []grpcCall
}

func (l *grpcLog) add(c grpcCall) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, c)
}

// of lists the calls made for gid.
func (l *grpcLog) of(gid string) []grpcCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []grpcCall
	for _, c := range l.calls {
		if c.Gid == gid {
			out = append(out, c)
		}
	}
	return out
}

// sequence renders gid's calls as "Method(branch_id,op)".
func (l *grpcLog) sequence(gid string) []string {
	var out []string
	for _, c := range l.of(gid) {
		out = append(out, fmt.Sprintf("%s(%s,%s)", c.Method, c.BranchID, c.Op))
	}
	return out
}

// countOf counts gid's calls of method.
func (l *grpcLog) countOf(gid, method string) int {
	n := 0
	for _, c := range l.of(gid) {
		if c.Method == method {
			n++
		}
	}
	return n
}

// grpcHandler answers a call: nil is OK, otherwise a gRPC status error (Aborted = FAILURE,
// FailedPrecondition = ONGOING, anything else is retried by the server).
type grpcHandler func(ctx context.Context, payload []byte) error

// grpcBusi is a scripted gRPC branch service on 127.0.0.1 that records every call.
type grpcBusi struct {
	grpcLog
	addr     string
	scripts  map[string][]codes.Code
	handlers map[string]grpcHandler
}

func newGrpcBusi(t *testing.T) *grpcBusi {
	t.Helper()
	b := &grpcBusi{scripts: map[string][]codes.Code{}, handlers: map[string]grpcHandler{}}
	srv := grpc.NewServer(grpc.ForceServerCodec(passCodec{}))
	srv.RegisterService(busiServiceDesc(), b)
	b.addr = serveGrpc(t, srv)
	return b
}

// serveGrpc serves srv on a free loopback port until the test ends and returns its address.
func serveGrpc(t *testing.T, srv *grpc.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// url of a method, as a gRPC branch URL.
func (b *grpcBusi) url(method string) string { return b.addr + "/" + busiService + "/" + method }

// script makes the next calls of method answer these codes in turn; after them, the handler or OK.
func (b *grpcBusi) script(method string, answers ...codes.Code) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.scripts[method] = append([]codes.Code(nil), answers...)
}

// on makes method answer through fn (after any script is used up).
func (b *grpcBusi) on(method string, fn grpcHandler) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.handlers[method] = fn
}

func (b *grpcBusi) serve(ctx context.Context, method string, payload []byte) (*emptypb.Empty, error) {
	b.add(newGrpcCall(ctx, method, payload))
	b.mu.Lock()
	var fn grpcHandler
	scripted, code := false, codes.OK
	if s := b.scripts[method]; len(s) > 0 {
		scripted, code, b.scripts[method] = true, s[0], s[1:]
	} else {
		fn = b.handlers[method]
	}
	b.mu.Unlock()
	switch {
	case scripted:
		return &emptypb.Empty{}, answer(code)
	case fn != nil:
		return &emptypb.Empty{}, fn(ctx, payload)
	}
	return &emptypb.Empty{}, nil
}

// answer is the error a busi returns for code; the message names the code, so a stored rollback_reason
// can be traced back to the scripted answer.
func answer(code codes.Code) error {
	if code == codes.OK {
		return nil
	}
	return status.Error(code, "busi answers "+code.String())
}

// busiServiceDesc describes busi.Busi by hand: every method takes the raw request bytes (see passCodec) and
// returns google.protobuf.Empty, so no generated code is needed.
func busiServiceDesc() *grpc.ServiceDesc {
	desc := &grpc.ServiceDesc{ServiceName: busiService, HandlerType: (*interface{})(nil), Metadata: "busi.proto"}
	for _, name := range busiMethods {
		name := name
		desc.Methods = append(desc.Methods, grpc.MethodDesc{
			MethodName: name,
			Handler: func(srv interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
				var payload []byte
				if err := dec(&payload); err != nil {
					return nil, err
				}
				return srv.(*grpcBusi).serve(ctx, name, payload)
			},
		})
	}
	return desc
}

// passCodec hands a request decoded into *[]byte over as the exact bytes received, so the busi records what
// the server stored and sent; everything else (replies, other services' requests) is plain protobuf.
type passCodec struct{}

func (passCodec) Marshal(v interface{}) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("passCodec: cannot marshal %T", v)
	}
	return proto.Marshal(m)
}

func (passCodec) Unmarshal(data []byte, v interface{}) error {
	if raw, ok := v.(*[]byte); ok {
		*raw = append([]byte(nil), data...)
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("passCodec: cannot unmarshal into %T", v)
	}
	return proto.Unmarshal(data, m)
}

// Name is "proto": the codec stands in for the default one, whatever content-subtype a client sends.
func (passCodec) Name() string { return "proto" }

// transfer is a branch request: a protobuf Struct, so payloads need no generated message type.
func transfer(fields map[string]interface{}) *structpb.Struct {
	s, err := structpb.NewStruct(fields)
	if err != nil {
		panic(err)
	}
	return s
}

// decodeTransfer reads a payload back; a bad payload is an Internal error, which the server retries.
func decodeTransfer(payload []byte) (*structpb.Struct, error) {
	var s structpb.Struct
	if err := proto.Unmarshal(payload, &s); err != nil {
		return nil, status.Errorf(codes.Internal, "bad payload %x: %v", payload, err)
	}
	return &s, nil
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// samePayload checks that a payload decodes to want (byte equality would depend on map order).
func samePayload(t *testing.T, what string, payload []byte, want proto.Message) {
	t.Helper()
	got := want.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(payload, got); err != nil {
		t.Fatalf("%s: payload %x: %v", what, payload, err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("%s: payload %v, want %v", what, got, want)
	}
}
