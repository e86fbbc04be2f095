package fastdtm.interop;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedDeque;
import java.util.concurrent.Executors;
import pub.dtm.client.DtmClient;
import pub.dtm.client.saga.Saga;

/**
 * The dtmcli-java interop suite: runs the real SDK against a fastdtm node through a recording proxy, with branch
 * services on the JDK's HttpServer, and checks outcomes through GET /api/dtmsvr/query and the recorded branch calls.
 * Prints "N passed, N failed" and exits non-zero when any scenario failed. Arguments: scenario names to run (all when
 * none). DTM_HOSTPORT (or -Ddtm.hostport) names the node; DTM_CAPTURE_FILE, if set, receives the SDK's requests.
 */
public final class JavaSdkInterop {
    static final ObjectMapper JSON = new ObjectMapper();
    static final HttpClient HTTP = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(5)).build();
    static final Map<String, Object> PAYLOAD = new LinkedHashMap<>(Map.of("amount", 30));
    static final String BODY = "{\"amount\":30}";

    record Call(String path, String gid, String branchId, String op, String method, String body, long at) {}

    record Captured(String scenario, String method, String target, String body, int status, String reply) {}

    /** Branch services: every call recorded; per-path scripted HTTP statuses (default 200). */
    static final class Busi {
        final HttpServer server;
        final ConcurrentLinkedDeque<Call> calls = new ConcurrentLinkedDeque<>();
        final Map<String, ConcurrentLinkedDeque<Integer>> scripts = new ConcurrentHashMap<>();
        final Map<String, Long> delays = new ConcurrentHashMap<>();

        Busi() throws IOException {
            server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
            server.setExecutor(Executors.newCachedThreadPool());
            server.createContext("/", this::handle);
            server.start();
        }

        String url(String path) {
            return "http://127.0.0.1:" + server.getAddress().getPort() + path;
        }

        void reset() {
            calls.clear();
            scripts.clear();
            delays.clear();
        }

        void script(String path, Integer... statuses) {
            scripts.put(path, new ConcurrentLinkedDeque<>(Arrays.asList(statuses)));
        }

        void handle(HttpExchange ex) throws IOException {
            String path = ex.getRequestURI().getPath();
            Map<String, String> q = queryParams(ex.getRequestURI().getRawQuery());
            String body = new String(ex.getRequestBody().readAllBytes(), StandardCharsets.UTF_8);
            long delay = delays.getOrDefault(path, 0L);
            if (delay > 0) {
                sleep(delay);
            }
            calls.add(new Call(path, q.getOrDefault("gid", ""), q.getOrDefault("branch_id", ""),
                    q.getOrDefault("op", ""), ex.getRequestMethod(), body, System.nanoTime()));
            ConcurrentLinkedDeque<Integer> script = scripts.get(path);
            Integer scripted = script == null ? null : script.pollFirst();
            int status = scripted == null ? 200 : scripted;
            String reply = status == 200 ? "{\"dtm_result\":\"SUCCESS\"}"
                    : status == 409 ? "{\"dtm_result\":\"FAILURE\"}"
                    : status == 425 ? "{\"dtm_result\":\"ONGOING\"}" : "{\"message\":\"ERROR\"}";
            send(ex, status, reply.getBytes(StandardCharsets.UTF_8));
        }

        List<String> sequence(String gid) {
            List<String> out = new ArrayList<>();
            for (Call c : calls) {
                if (c.gid().equals(gid)) {
                    out.add(c.path() + "(" + c.branchId() + "," + c.op() + "," + c.method() + ")");
                }
            }
            return out;
        }

        Call first(String path) {
            for (Call c : calls) {
                if (c.path().equals(path)) {
                    return c;
                }
            }
            throw new AssertionError("no call to " + path + "; calls: " + calls);
        }
    }

    /** Recording proxy between the SDK and the node: forwards everything, keeps the exact request bytes. */
    static final class Proxy {
        final HttpServer server;
        final String upstream;
        final List<Captured> captured = new ArrayList<>();
        volatile String scenario = "";

        Proxy(String upstreamHostPort) throws IOException {
            upstream = "http://" + upstreamHostPort;
            server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
            server.setExecutor(Executors.newCachedThreadPool());
            server.createContext("/", this::handle);
            server.start();
        }

        String hostPort() {
            return "127.0.0.1:" + server.getAddress().getPort();
        }

        void handle(HttpExchange ex) throws IOException {
            byte[] body = ex.getRequestBody().readAllBytes();
            String target = ex.getRequestURI().toString();
            HttpRequest.Builder req = HttpRequest.newBuilder(URI.create(upstream + target))
                    .timeout(Duration.ofSeconds(30));
            String type = ex.getRequestHeaders().getFirst("Content-Type");
            if (type != null) {
                req.header("Content-Type", type);
            }
            if (ex.getRequestMethod().equals("GET")) {
                req.GET();
            } else {
                req.method(ex.getRequestMethod(), HttpRequest.BodyPublishers.ofByteArray(body));
            }
            HttpResponse<byte[]> reply;
            try {
                reply = HTTP.send(req.build(), HttpResponse.BodyHandlers.ofByteArray());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException(e);
            }
            synchronized (captured) {
                captured.add(new Captured(scenario, ex.getRequestMethod(), target,
                        new String(body, StandardCharsets.UTF_8), reply.statusCode(),
                        new String(reply.body(), StandardCharsets.UTF_8)));
            }
            reply.headers().firstValue("Content-Type").ifPresent(t -> ex.getResponseHeaders().set("Content-Type", t));
            send(ex, reply.statusCode(), reply.body());
        }
    }

    final String dtmHostPort;
    final Busi busi;
    final Proxy proxy;
    final DtmClient client;

    JavaSdkInterop(String dtmHostPort) throws IOException {
        this.dtmHostPort = dtmHostPort;
        this.busi = new Busi();
        this.proxy = new Proxy(dtmHostPort);
        this.client = new DtmClient(proxy.hostPort());
    }

    // --- helpers --------------------------------------------------------------------------------------------------

    static void send(HttpExchange ex, int status, byte[] body) throws IOException {
        ex.sendResponseHeaders(status, body.length == 0 ? -1 : body.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(body);
        }
    }

    static Map<String, String> queryParams(String raw) {
        Map<String, String> out = new LinkedHashMap<>();
        if (raw == null || raw.isEmpty()) {
            return out;
        }
        for (String pair : raw.split("&")) {
            int eq = pair.indexOf('=');
            String key = eq < 0 ? pair : pair.substring(0, eq);
            String value = eq < 0 ? "" : pair.substring(eq + 1);
            out.put(java.net.URLDecoder.decode(key, StandardCharsets.UTF_8),
                    java.net.URLDecoder.decode(value, StandardCharsets.UTF_8));
        }
        return out;
    }

    static void sleep(long millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    static void check(boolean condition, String message) {
        if (!condition) {
            throw new AssertionError(message);
        }
    }

    static void checkEquals(Object expected, Object actual, String what) {
        if (!expected.equals(actual)) {
            throw new AssertionError(what + ": expected " + expected + ", got " + actual);
        }
    }

    JsonNode query(String gid) throws Exception {
        HttpRequest req = HttpRequest.newBuilder(URI.create("http://" + dtmHostPort + "/api/dtmsvr/query?gid=" + gid))
                .timeout(Duration.ofSeconds(10)).GET().build();
        HttpResponse<String> reply = HTTP.send(req, HttpResponse.BodyHandlers.ofString());
        checkEquals(200, reply.statusCode(), "query status for " + gid + " (" + reply.body() + ")");
        return JSON.readTree(reply.body());
    }

    JsonNode waitStatus(String gid, Set<String> wanted) throws Exception {
        long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
        JsonNode last = null;
        while (System.nanoTime() < deadline) {
            last = query(gid);
            if (wanted.contains(last.path("transaction").path("status").asText())) {
                return last;
            }
            sleep(100);
        }
        throw new AssertionError("gid " + gid + " never reached " + wanted + "; last /query: " + last);
    }

    static String statuses(JsonNode reply) {
        StringBuilder out = new StringBuilder();
        for (JsonNode b : reply.path("branches")) {
            out.append(b.path("status").asText().charAt(0));
        }
        return out.toString();
    }

    static String status(JsonNode reply) {
        return reply.path("transaction").path("status").asText();
    }

    Saga transferSaga() {
        return client.newSaga()
                .add(busi.url("/TransOut"), busi.url("/TransOutRevert"), PAYLOAD)
                .add(busi.url("/TransIn"), busi.url("/TransInRevert"), PAYLOAD);
    }

    // --- scenarios --------------------------------------------------------------------------------------------------

    /** S01: both steps succeed; the server calls the actions in order with the SDK's payload bytes. */
    void sagaNormal() throws Exception {
        Saga saga = transferSaga();
        saga.submit();
        String gid = saga.getGid();
        JsonNode reply = waitStatus(gid, Set.of("succeed"));
        checkEquals("psps", statuses(reply), "branch statuses");
        checkEquals(List.of("/TransOut(01,action,POST)", "/TransIn(02,action,POST)"), busi.sequence(gid), "calls");
        checkEquals(BODY, busi.first("/TransOut").body(), "TransOut body");
        checkEquals(BODY, busi.first("/TransIn").body(), "TransIn body");
    }

    /** S02: TransIn answers 409, every step is compensated, the failed one too, last first. */
    void sagaRollback() throws Exception {
        busi.script("/TransIn", 409);
        Saga saga = transferSaga();
        saga.submit();
        String gid = saga.getGid();
        JsonNode reply = waitStatus(gid, Set.of("failed"));
        checkEquals("sssf", statuses(reply), "branch statuses");
        checkEquals(List.of("/TransOut(01,action,POST)", "/TransIn(02,action,POST)",
                "/TransInRevert(02,compensate,POST)", "/TransOutRevert(01,compensate,POST)"), busi.sequence(gid),
                "calls");
    }

    /** S06: enableWaitResult(): the transaction is finished when submit returns. */
    void sagaWaitResult() throws Exception {
        Saga saga = transferSaga().enableWaitResult();
        saga.submit();
        String gid = saga.getGid();
        JsonNode reply = query(gid);
        checkEquals("succeed", status(reply), "status right after submit");
        checkEquals("psps", statuses(reply), "branch statuses");
        checkEquals(List.of("/TransOut(01,action,POST)", "/TransIn(02,action,POST)"), busi.sequence(gid), "calls");
    }

    /** S08: concurrent saga, steps 2 and 3 wait for steps 0 and 1. */
    void sagaConcurrent() throws Exception {
        busi.delays.put("/A0", 300L);
        busi.delays.put("/A1", 300L);
        Saga saga = client.newSaga();
        for (int i = 0; i < 4; i++) {
            saga.add(busi.url("/A" + i), busi.url("/C" + i), PAYLOAD);
        }
        saga.enableConcurrent().addBranchOrder(2, List.of(0, 1)).addBranchOrder(3, List.of(0, 1));
        saga.submit();
        String gid = saga.getGid();
        JsonNode reply = waitStatus(gid, Set.of("succeed"));
        checkEquals("psppspps".length(), statuses(reply).length(), "branch count");
        checkEquals("psps" + "psps", statuses(reply), "branch statuses");
        checkEquals(4, busi.sequence(gid).size(), "call count: " + busi.sequence(gid));
        // A call is recorded once its handler has slept, so A0/A1 are recorded just before they answer.
        long firstDone = Math.max(busi.first("/A0").at(), busi.first("/A1").at());
        check(busi.first("/A2").at() >= firstDone, "A2 ran before A0/A1 answered: " + busi.sequence(gid));
        check(busi.first("/A3").at() >= firstDone, "A3 ran before A0/A1 answered: " + busi.sequence(gid));
        String custom = reply.path("transaction").path("custom_data").asText();
        JsonNode parsed = JSON.readTree(custom);
        check(parsed.path("concurrent").asBoolean(), "custom_data concurrent: " + custom);
    }

    /** S17: TCC, both tries succeed; the server confirms the last branch first. */
    void tccNormal() throws Exception {
        String[] gidHolder = new String[1];
        String gid = client.tccGlobalTransaction(tcc -> {
            gidHolder[0] = tcc.getGid();
            tcc.callBranch(PAYLOAD, busi.url("/TransOutTry"), busi.url("/TransOutConfirm"), busi.url("/TransOutCancel"));
            tcc.callBranch(PAYLOAD, busi.url("/TransInTry"), busi.url("/TransInConfirm"), busi.url("/TransInCancel"));
        });
        checkEquals(gidHolder[0], gid, "returned gid");
        JsonNode reply = waitStatus(gid, Set.of("succeed"));
        checkEquals("psps", statuses(reply), "branch statuses");
        checkEquals(List.of("/TransOutTry(01,try,POST)", "/TransInTry(02,try,POST)",
                "/TransInConfirm(02,confirm,POST)", "/TransOutConfirm(01,confirm,POST)"), busi.sequence(gid), "calls");
        checkEquals(BODY, busi.first("/TransInTry").body(), "try body");
        checkEquals(BODY, busi.first("/TransOutConfirm").body(), "confirm body");
    }

    /** S18: TransIn's try answers 409: the SDK aborts and the server cancels both branches, last first. */
    void tccRollback() throws Exception {
        busi.script("/TransInTry", 409);
        String[] gidHolder = new String[1];
        boolean raised = false;
        try {
            client.tccGlobalTransaction(tcc -> {
                gidHolder[0] = tcc.getGid();
                tcc.callBranch(PAYLOAD, busi.url("/TransOutTry"), busi.url("/TransOutConfirm"),
                        busi.url("/TransOutCancel"));
                tcc.callBranch(PAYLOAD, busi.url("/TransInTry"), busi.url("/TransInConfirm"),
                        busi.url("/TransInCancel"));
            });
        } catch (Exception e) {
            raised = true;
        }
        check(raised, "tccGlobalTransaction did not raise after a failed try");
        String gid = gidHolder[0];
        JsonNode reply = waitStatus(gid, Set.of("failed"));
        checkEquals("spsp", statuses(reply), "branch statuses");
        checkEquals(List.of("/TransOutTry(01,try,POST)", "/TransInTry(02,try,POST)",
                "/TransInCancel(02,cancel,POST)", "/TransOutCancel(01,cancel,POST)"), busi.sequence(gid), "calls");
    }

    interface Scenario {
        void run() throws Exception;
    }

    public static void main(String[] args) throws Exception {
        String hostPort = System.getProperty("dtm.hostport", System.getenv("DTM_HOSTPORT"));
        if (hostPort == null || hostPort.isEmpty()) {
            System.err.println("set DTM_HOSTPORT (or -Ddtm.hostport) to the fastdtm node's host:port");
            System.exit(2);
        }
        JavaSdkInterop suite = new JavaSdkInterop(hostPort);
        Map<String, Scenario> all = new LinkedHashMap<>();
        all.put("sagaNormal", suite::sagaNormal);
        all.put("sagaRollback", suite::sagaRollback);
        all.put("sagaWaitResult", suite::sagaWaitResult);
        all.put("sagaConcurrent", suite::sagaConcurrent);
        all.put("tccNormal", suite::tccNormal);
        all.put("tccRollback", suite::tccRollback);
        List<String> names = args.length == 0 ? new ArrayList<>(all.keySet()) : Arrays.asList(args);
        int passed = 0;
        int failed = 0;
        for (String name : names) {
            Scenario scenario = all.get(name);
            if (scenario == null) {
                System.out.println("UNKNOWN " + name);
                failed++;
                continue;
            }
            suite.busi.reset();
            suite.proxy.scenario = name;
            long start = System.nanoTime();
            try {
                scenario.run();
                passed++;
                System.out.printf("PASS %s (%d ms)%n", name, (System.nanoTime() - start) / 1_000_000);
            } catch (Throwable t) {
                failed++;
                System.out.printf("FAIL %s: %s%n", name, t);
                t.printStackTrace(System.out);
            }
        }
        String capture = System.getenv("DTM_CAPTURE_FILE");
        if (capture != null && !capture.isEmpty()) {
            ArrayNode out = JSON.createArrayNode();
            synchronized (suite.proxy.captured) {
                for (Captured c : suite.proxy.captured) {
                    ObjectNode row = out.addObject();
                    row.put("scenario", c.scenario());
                    row.put("method", c.method());
                    row.put("target", c.target());
                    row.put("body", c.body());
                    row.put("status", c.status());
                    row.put("reply", c.reply());
                }
            }
            Files.writeString(Path.of(capture), JSON.writerWithDefaultPrettyPrinter().writeValueAsString(out));
        }
        System.out.printf("java-sdk: %d passed, %d failed%n", passed, failed);
        System.out.flush();
        // The SDK's and nacos' threads are not daemons: leave explicitly.
        System.exit(failed == 0 ? 0 : 1);
    }
}
