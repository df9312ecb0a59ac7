/*
 * h2grpc: a unary gRPC load generator on libnghttp2, for SPEC §8's distinct traffic.
 *
 * h2load sends one body over and over and counts any HTTP 200 as a success; this client
 * cycles through a file of pre-encoded gRPC messages (loadtest/stream.py writes one) and reads
 * the gRPC status of every answer. It opens N connections over h2c (HTTP/2 with prior
 * knowledge), keeps M streams in flight on each, and POSTs every message to the Check method
 * with `content-type: application/grpc` and `te: trailers`; connection i starts i/N of the way
 * into the file, so the connections do not send the same request at the same moment.
 *
 * An answer is an error when its stream is reset, its HTTP status is not 200, it has no
 * `grpc-status` (read from the trailers, or the headers of a Trailers-Only answer), or that
 * status is not 0. Every request's latency, from just before it is handed to nghttp2 to the
 * read that ends its stream (CLOCK_MONOTONIC, ns), is kept for the answers that end inside the
 * measured window (after the warm-up); they go to --latencies as native-endian uint64.
 *
 * One thread, non-blocking sockets, poll(2): it has to cost far less CPU per request than the
 * cheapest server, which is why it reports its own (getrusage over the measured window).
 * The summary is one JSON object on stdout. Built by loadtest/h2grpc/__init__.py:
 *     gcc -O2 -o h2grpc h2grpc.c -lnghttp2
 * Usage: h2grpc --address HOST:PORT --stream FILE [--connections N] [--streams M]
 *               [--duration S] [--warmup S] [--drain S] [--latencies FILE] [--path PATH]
 *        h2grpc --version
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNECTIONS 256
#define GRPC_CODES 17

enum phase { WARMUP, MEASURE, DRAIN };
enum error_kind { E_GRPC_STATUS, E_HTTP_STATUS, E_MISSING_GRPC_STATUS, E_RESET, E_CONNECTION, E_UNFINISHED, E_KINDS };
static const char *ERROR_NAMES[E_KINDS] = {"grpc_status",         "http_status", "missing_grpc_status",
                                           "stream_reset",        "connection",  "unfinished"};

struct message {
    const uint8_t *data; /* the whole gRPC frame: flag byte, length, CheckRequest */
    size_t len;
};

struct conn;

struct slot { /* one stream in flight */
    struct conn *conn;
    const struct message *message;
    size_t sent;
    uint64_t started;
    int http_status;
    int grpc_status; /* -1 until read */
    int busy;
};

struct conn {
    int fd;
    int dead;
    nghttp2_session *session;
    size_t cursor; /* the next message of the file */
    int inflight;
    struct slot *slots;
    uint8_t *out;
    size_t out_len, out_off, out_cap;
};

static struct {
    const char *address, *stream_path, *latencies_path, *path;
    int connections, streams;
    double duration, warmup, drain;
} opt = {NULL, NULL, NULL, "/envoy.service.auth.v3.Authorization/Check", 1, 1, 5.0, 1.0, 5.0};

static struct {
    struct message *messages;
    size_t count;
    enum phase phase;
    uint64_t now;            /* the time of the last read: when the answers it carried arrived */
    uint64_t measure_started, measure_ended;
    uint64_t requests, ok;   /* answers that ended inside the measured window */
    uint64_t completed;      /* every answer, warm-up and drain included */
    uint64_t errors[E_KINDS];
    uint64_t grpc_codes[GRPC_CODES + 1]; /* the last: any code above 16 */
    char first_error[256];
    uint64_t *latencies;
    size_t latencies_len, latencies_cap;
    char authority[256];
} g;

static uint64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + (double)usage.ru_stime.tv_sec +
           usage.ru_stime.tv_usec / 1e6;
}

static void die(const char *what, const char *detail) {
    fprintf(stderr, "h2grpc: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(2);
}

static void *must(void *pointer) {
    if (!pointer) die("out of memory", NULL);
    return pointer;
}

/* --- the stream file ------------------------------------------------------------------------ */

static void load_messages(const char *path) {
    FILE *file = fopen(path, "rb");
    if (!file) die("cannot open the stream file", path);
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    uint8_t *data = must(malloc(size > 0 ? (size_t)size : 1));
    if (size > 0 && fread(data, 1, (size_t)size, file) != (size_t)size) die("cannot read the stream file", path);
    fclose(file);
    size_t capacity = 1024;
    g.messages = must(malloc(capacity * sizeof *g.messages));
    for (size_t offset = 0; offset < (size_t)size;) {
        if (offset + 5 > (size_t)size || data[offset] != 0) die("not an uncompressed gRPC frame in", path);
        size_t len = 5 + ((size_t)data[offset + 1] << 24 | (size_t)data[offset + 2] << 16 |
                          (size_t)data[offset + 3] << 8 | data[offset + 4]);
        if (offset + len > (size_t)size) die("a frame is cut short in", path);
        if (g.count == capacity) g.messages = must(realloc(g.messages, (capacity *= 2) * sizeof *g.messages));
        g.messages[g.count++] = (struct message){data + offset, len};
        offset += len;
    }
    if (!g.count) die("no messages in", path);
}

/* --- answers -------------------------------------------------------------------------------- */

static void count_error(enum error_kind kind, const char *detail) {
    g.errors[kind]++;
    if (!g.first_error[0]) snprintf(g.first_error, sizeof g.first_error, "%s: %s", ERROR_NAMES[kind], detail);
}

static void keep_latency(uint64_t ns) {
    if (g.latencies_len == g.latencies_cap) {
        g.latencies_cap = g.latencies_cap ? g.latencies_cap * 2 : 65536;
        g.latencies = must(realloc(g.latencies, g.latencies_cap * sizeof *g.latencies));
    }
    g.latencies[g.latencies_len++] = ns;
}

/* Classifies one finished stream; `reset` is its RST_STREAM code (0 for a clean end). */
static void finish(struct slot *slot, uint32_t reset) {
    char detail[64];
    int good = 0;
    if (reset != NGHTTP2_NO_ERROR) {
        snprintf(detail, sizeof detail, "RST_STREAM %s", nghttp2_http2_strerror(reset));
        count_error(E_RESET, detail);
    } else if (slot->http_status != 200) {
        snprintf(detail, sizeof detail, "HTTP %d", slot->http_status);
        count_error(E_HTTP_STATUS, detail);
    } else if (slot->grpc_status < 0) {
        count_error(E_MISSING_GRPC_STATUS, "HTTP 200 without grpc-status");
    } else if (slot->grpc_status != 0) {
        snprintf(detail, sizeof detail, "grpc-status %d", slot->grpc_status);
        count_error(E_GRPC_STATUS, detail);
        g.grpc_codes[slot->grpc_status < GRPC_CODES ? slot->grpc_status : GRPC_CODES]++;
    } else {
        good = 1;
    }
    g.completed++;
    if (g.phase == MEASURE) {
        g.requests++;
        if (good) {
            g.ok++;
            keep_latency(g.now - slot->started);
        }
    }
    slot->busy = 0;
    slot->conn->inflight--;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data) {
    (void)flags, (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    struct slot *slot = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!slot) return 0;
    char text[16] = {0};
    memcpy(text, value, valuelen < sizeof text - 1 ? valuelen : sizeof text - 1);
    if (namelen == 7 && !memcmp(name, ":status", 7)) slot->http_status = atoi(text);
    if (namelen == 11 && !memcmp(name, "grpc-status", 11)) slot->grpc_status = valuelen ? atoi(text) : 99;
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data) {
    (void)user_data;
    struct slot *slot = nghttp2_session_get_stream_user_data(session, stream_id);
    if (slot) finish(slot, error_code);
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
    (void)session;
    struct conn *conn = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY && !conn->dead) {
        conn->dead = 1;
        count_error(E_CONNECTION, "GOAWAY from the server");
    }
    return 0;
}

/* --- requests ------------------------------------------------------------------------------- */

static ssize_t read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
    (void)session, (void)stream_id, (void)user_data;
    struct slot *slot = source->ptr;
    size_t left = slot->message->len - slot->sent;
    size_t n = left < length ? left : length;
    memcpy(buf, slot->message->data + slot->sent, n);
    slot->sent += n;
    if (slot->sent == slot->message->len) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

#define HEADER(NAME, VALUE)                                                                              \
    {                                                                                                    \
        (uint8_t *)(NAME), (uint8_t *)(VALUE), sizeof(NAME) - 1, strlen(VALUE),                          \
            NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE                                 \
    }

static void submit(struct conn *conn, uint64_t now) {
    struct slot *slot = NULL;
    for (int i = 0; i < opt.streams && !slot; i++)
        if (!conn->slots[i].busy) slot = &conn->slots[i];
    if (!slot) return;
    *slot = (struct slot){conn, &g.messages[conn->cursor], 0, now, 0, -1, 1};
    conn->cursor = (conn->cursor + 1) % g.count;
    nghttp2_nv headers[] = {
        HEADER(":method", "POST"),           HEADER(":scheme", "http"),
        HEADER(":path", opt.path),           HEADER(":authority", g.authority),
        HEADER("content-type", "application/grpc"), HEADER("te", "trailers"),
        HEADER("user-agent", "h2grpc"),
    };
    nghttp2_data_provider body = {.source.ptr = slot, .read_callback = read_body};
    if (nghttp2_submit_request(conn->session, NULL, headers, sizeof headers / sizeof *headers, &body, slot) < 0) {
        slot->busy = 0;
        conn->dead = 1;
        count_error(E_CONNECTION, "nghttp2_submit_request failed");
        return;
    }
    conn->inflight++;
}

/* --- connections ---------------------------------------------------------------------------- */

static int connect_to(const char *address) {
    char host[256];
    const char *colon = strrchr(address, ':');
    if (!colon || (size_t)(colon - address) >= sizeof host) die("--address must be HOST:PORT", address);
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = 0;
    char *bare = host;
    if (bare[0] == '[') { /* [::1]:9191 */
        bare++;
        bare[strlen(bare) - 1] = 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *found;
    if (getaddrinfo(bare, colon + 1, &hints, &found)) die("cannot resolve", address);
    int fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, found->ai_addr, found->ai_addrlen) < 0) die("cannot connect to", address);
    freeaddrinfo(found);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) die("cannot make the socket non-blocking", address);
    return fd;
}

static void open_connection(struct conn *conn, int index) {
    conn->fd = connect_to(opt.address);
    conn->cursor = g.count * (size_t)index / (size_t)opt.connections;
    conn->slots = must(calloc((size_t)opt.streams, sizeof *conn->slots));
    nghttp2_session_callbacks *callbacks;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    if (nghttp2_session_client_new(&conn->session, callbacks, conn)) die("nghttp2_session_client_new failed", NULL);
    nghttp2_session_callbacks_del(callbacks);
    /* Large windows: the answers never wait for a WINDOW_UPDATE. */
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1024},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 24},
    };
    nghttp2_submit_settings(conn->session, NGHTTP2_FLAG_NONE, settings, sizeof settings / sizeof *settings);
    nghttp2_session_set_local_window_size(conn->session, NGHTTP2_FLAG_NONE, 0, 1 << 30);
}

static void close_connection(struct conn *conn, const char *why) {
    if (conn->dead < 2) {
        if (!conn->dead) count_error(E_CONNECTION, why);
        conn->dead = 2;
        close(conn->fd);
        conn->fd = -1;
        g.errors[E_UNFINISHED] += (uint64_t)conn->inflight;
        conn->inflight = 0;
    }
}

/* Everything nghttp2 has to send, then as much of it as the socket takes (the rest waits for POLLOUT). */
static void flush(struct conn *conn) {
    if (conn->dead > 1) return;
    if (conn->out_off == conn->out_len) {
        conn->out_off = conn->out_len = 0;
        for (;;) {
            const uint8_t *chunk;
            ssize_t n = nghttp2_session_mem_send(conn->session, &chunk);
            if (n < 0) return close_connection(conn, nghttp2_strerror((int)n));
            if (n == 0) break;
            if (conn->out_len + (size_t)n > conn->out_cap) {
                conn->out_cap = (conn->out_len + (size_t)n) * 2;
                conn->out = must(realloc(conn->out, conn->out_cap));
            }
            memcpy(conn->out + conn->out_len, chunk, (size_t)n);
            conn->out_len += (size_t)n;
        }
    }
    while (conn->out_off < conn->out_len) {
        ssize_t n = send(conn->fd, conn->out + conn->out_off, conn->out_len - conn->out_off, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n < 0) return close_connection(conn, strerror(errno));
        conn->out_off += (size_t)n;
    }
}

static void receive(struct conn *conn) {
    uint8_t buffer[65536];
    for (;;) {
        ssize_t n = recv(conn->fd, buffer, sizeof buffer, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n <= 0) return close_connection(conn, n == 0 ? "the server closed the connection" : strerror(errno));
        g.now = monotonic_ns();
        ssize_t used = nghttp2_session_mem_recv(conn->session, buffer, (size_t)n);
        if (used < 0) return close_connection(conn, nghttp2_strerror((int)used));
        if ((size_t)n < sizeof buffer) return; /* drained for now: poll is level-triggered, a recv less */
    }
}

/* --- the run -------------------------------------------------------------------------------- */

static void parse_options(int argc, char **argv) {
    static const struct option options[] = {
        {"address", required_argument, 0, 'a'},  {"stream", required_argument, 0, 's'},
        {"connections", required_argument, 0, 'c'}, {"streams", required_argument, 0, 'm'},
        {"duration", required_argument, 0, 'd'}, {"warmup", required_argument, 0, 'w'},
        {"drain", required_argument, 0, 'D'},    {"latencies", required_argument, 0, 'l'},
        {"path", required_argument, 0, 'p'},     {"version", no_argument, 0, 'V'}, {0, 0, 0, 0},
    };
    for (int c; (c = getopt_long(argc, argv, "a:s:c:m:d:w:D:l:p:", options, NULL)) != -1;) {
        switch (c) {
        case 'a': opt.address = optarg; break;
        case 's': opt.stream_path = optarg; break;
        case 'c': opt.connections = atoi(optarg); break;
        case 'm': opt.streams = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'D': opt.drain = atof(optarg); break;
        case 'l': opt.latencies_path = optarg; break;
        case 'p': opt.path = optarg; break;
        case 'V': printf("h2grpc on nghttp2/%s\n", nghttp2_version(0)->version_str); exit(0);
        default: die("usage: h2grpc --address HOST:PORT --stream FILE [options] (see the source)", NULL);
        }
    }
    if (!opt.address || !opt.stream_path) die("--address and --stream are required", NULL);
    if (opt.connections < 1 || opt.connections > MAX_CONNECTIONS || opt.streams < 1 || opt.duration <= 0 ||
        opt.warmup < 0)
        die("--connections 1..256, --streams >= 1, --duration > 0, --warmup >= 0", NULL);
    snprintf(g.authority, sizeof g.authority, "%s", opt.address);
}

/* Runs the event loop through warm-up, measurement and drain; returns the CPU seconds measured. */
static double run(struct conn *conns) {
    struct pollfd fds[MAX_CONNECTIONS];
    uint64_t start = monotonic_ns(), warm_end = start + (uint64_t)(opt.warmup * 1e9);
    uint64_t end = warm_end + (uint64_t)(opt.duration * 1e9), give_up = end + (uint64_t)(opt.drain * 1e9);
    double cpu_start = 0;
    for (;;) {
        uint64_t now = monotonic_ns();
        if (g.phase == WARMUP && now >= warm_end) {
            g.phase = MEASURE, g.measure_started = now, cpu_start = cpu_seconds();
        }
        if (g.phase == MEASURE && now >= end) {
            g.phase = DRAIN, g.measure_ended = now;
            cpu_start = cpu_seconds() - cpu_start;
        }
        int inflight = 0, alive = 0;
        for (int i = 0; i < opt.connections; i++) {
            struct conn *conn = &conns[i];
            while (g.phase != DRAIN && !conn->dead && conn->inflight < opt.streams) submit(conn, now);
            flush(conn);
            inflight += conn->inflight;
            alive += conn->dead < 2;
            fds[i] = (struct pollfd){conn->fd, (short)(POLLIN | (conn->out_off < conn->out_len ? POLLOUT : 0)), 0};
        }
        if ((g.phase == DRAIN && !inflight) || !alive) break;
        if (g.phase == DRAIN && now >= give_up) {
            for (int i = 0; i < opt.connections; i++) g.errors[E_UNFINISHED] += (uint64_t)conns[i].inflight;
            break;
        }
        uint64_t next = g.phase == WARMUP ? warm_end : g.phase == MEASURE ? end : give_up;
        int wait_ms = (int)((next - now) / 1000000u) + 1;
        if (poll(fds, (nfds_t)opt.connections, wait_ms) < 0 && errno != EINTR) die("poll failed", strerror(errno));
        for (int i = 0; i < opt.connections; i++) {
            if (fds[i].fd < 0) continue;
            if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) receive(&conns[i]);
            if (!nghttp2_session_want_read(conns[i].session) && !nghttp2_session_want_write(conns[i].session))
                close_connection(&conns[i], "the HTTP/2 session ended");
        }
    }
    if (g.phase != DRAIN) { /* every connection died before the end */
        g.measure_ended = monotonic_ns();
        if (g.phase == MEASURE) cpu_start = cpu_seconds() - cpu_start;
        else g.measure_started = g.measure_ended, cpu_start = 0;
    }
    return cpu_start;
}

static void write_latencies(void) {
    if (!opt.latencies_path) return;
    FILE *file = fopen(opt.latencies_path, "wb");
    if (!file || fwrite(g.latencies, sizeof *g.latencies, g.latencies_len, file) != g.latencies_len || fclose(file))
        die("cannot write", opt.latencies_path);
}

static void print_json_string(const char *text) {
    putchar('"');
    for (; *text; text++) {
        if (*text == '"' || *text == '\\') printf("\\%c", *text);
        else if ((unsigned char)*text < 0x20) printf("\\u%04x", *text);
        else putchar(*text);
    }
    putchar('"');
}

static void report(double cpu) {
    double seconds = (double)(g.measure_ended - g.measure_started) / 1e9;
    uint64_t errors = 0;
    for (int k = 0; k < E_KINDS; k++) errors += g.errors[k];
    printf("{\"requests\": %" PRIu64 ", \"ok\": %" PRIu64 ", \"seconds\": %.6f, \"rps\": %.1f, ", g.requests, g.ok,
           seconds, seconds > 0 ? (double)g.requests / seconds : 0.0);
    printf("\"completed\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"errors_by_kind\": {", g.completed, errors);
    for (int k = 0; k < E_KINDS; k++) printf("%s\"%s\": %" PRIu64, k ? ", " : "", ERROR_NAMES[k], g.errors[k]);
    printf("}, \"grpc_status_codes\": {");
    for (int code = 0, first = 1; code <= GRPC_CODES; code++)
        if (g.grpc_codes[code]) printf("%s\"%d\": %" PRIu64, first ? "" : ", ", code, g.grpc_codes[code]), first = 0;
    printf("}, \"first_error\": ");
    print_json_string(g.first_error);
    printf(", \"cpu_seconds\": %.6f, \"cpu_us_per_request\": %.3f, ", cpu, g.requests ? cpu * 1e6 / (double)g.requests : 0.0);
    printf("\"latencies\": %zu, \"messages\": %zu, \"connections\": %d, \"streams\": %d, \"nghttp2\": \"%s\"}\n",
           g.latencies_len, g.count, opt.connections, opt.streams, nghttp2_version(0)->version_str);
}

int main(int argc, char **argv) {
    parse_options(argc, argv);
    load_messages(opt.stream_path);
    struct conn *conns = must(calloc((size_t)opt.connections, sizeof *conns));
    for (int i = 0; i < opt.connections; i++) open_connection(&conns[i], i);
    double cpu = run(conns);
    write_latencies();
    report(cpu);
    return 0;
}
