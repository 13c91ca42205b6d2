/* pingpong.c — the C reference load generator of `python -m bench`.
 *
 * A closed-loop echo client over raw TCP or a hand-rolled RFC 6455 WebSocket: CONNS connections,
 * each with exactly one echoswarm frame in flight (send, wait for the whole echo, compare it
 * byte for byte, send the next). One thread, one epoll set, blocking sockets that are only read
 * when epoll says they are readable — the shape of any event-loop client (wrk, gevent), with
 * nothing else on top. It stamps seq and monotonic timestamps into each frame, times every
 * reply and checks it, so it does the same per-message work our Python users do.
 *
 * Usage: pingpong tcp|ws HOST PORT CONNS WARMUP MESSAGES FRAME_BYTES
 *
 * After WARMUP echoes (all connections open and running) it takes getrusage(RUSAGE_SELF), then
 * counts MESSAGES more echoes and reads it again. One line of JSON goes to stdout:
 *   {"messages":N,"cpu_s":..,"user_s":..,"sys_s":..,"wall_s":..,"p50_us":..,"p99_us":..,
 *    "failures":0}
 * Exit status: 0 ok, 1 a connection/echo failure (message on stderr), 2 usage error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEADER 32
#define WS_MAX_HEAD 14 /* 2 + 8 extended length + 4 mask */

struct conn {
    int fd;
    uint64_t seq;
    int64_t sent_ns;
    unsigned char *frame;  /* the frame as sent (unmasked), to compare the echo with */
    unsigned char *wire;   /* what goes on the socket: frame, or ws head + masked frame */
    size_t wire_len;
    unsigned char *rbuf;   /* reply bytes read so far */
    size_t have;
};

static int ws_mode;
static size_t frame_bytes;
static uint32_t rng_state = 0x9e3779b9u;

static void die(const char *what) {
    fprintf(stderr, "pingpong: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double rusage_s(struct rusage *ru, int sys) {
    struct timeval *tv = sys ? &ru->ru_stime : &ru->ru_utime;
    return tv->tv_sec + tv->tv_usec / 1e6;
}

/* xorshift32: RFC 6455 wants a fresh, unpredictable mask per frame; this is what a cheap
 * client would use (the cost of masking is the XOR pass below, not the key). */
static uint32_t next_mask(void) {
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rng_state = x;
    return x;
}

static void write_all(int fd, const unsigned char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("send");
        }
        p += w;
        n -= (size_t)w;
    }
}

static void le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Stamp seq/intended/sent into the frame and send it (masked when speaking WebSocket). */
static void send_frame(struct conn *c) {
    int64_t t = now_ns();
    c->sent_ns = t;
    le64(c->frame + 8, c->seq);
    le64(c->frame + 16, (uint64_t)t);
    le64(c->frame + 24, (uint64_t)t);
    if (!ws_mode) {
        write_all(c->fd, c->frame, frame_bytes);
        return;
    }
    size_t head = c->wire_len - frame_bytes;
    uint32_t key = next_mask();
    unsigned char *mk = c->wire + head - 4;
    memcpy(mk, &key, 4);
    unsigned char *dst = c->wire + head;
    size_t i = 0;
    for (; i + 4 <= frame_bytes; i += 4) {
        uint32_t w;
        memcpy(&w, c->frame + i, 4);
        w ^= key;
        memcpy(dst + i, &w, 4);
    }
    for (; i < frame_bytes; i++) dst[i] = c->frame[i] ^ mk[i & 3];
    write_all(c->fd, c->wire, c->wire_len);
}

static int connect_to(const char *host, const char *port) {
    struct addrinfo hints = {0}, *res;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0) {
        errno = 0;
        die("cannot resolve host");
    }
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    if (connect(fd, res->ai_addr, res->ai_addrlen) < 0) die("connect");
    freeaddrinfo(res);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void ws_handshake(int fd, const char *host, const char *port) {
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /echo HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     host, port);
    write_all(fd, (unsigned char *)req, (size_t)n);
    char resp[4096];
    size_t have = 0;
    /* Read byte-wise up to the blank line so no frame byte is consumed with the head. */
    while (have < sizeof resp - 1) {
        ssize_t r = recv(fd, resp + have, 1, 0);
        if (r <= 0) die("websocket handshake");
        have++;
        if (have >= 4 && memcmp(resp + have - 4, "\r\n\r\n", 4) == 0) break;
    }
    resp[have] = 0;
    if (strncmp(resp, "HTTP/1.1 101", 12) != 0) {
        errno = 0;
        die("websocket handshake not accepted");
    }
}

/* How many bytes the complete reply needs given what is buffered (0 = not known yet), and the
 * offset of the echoed frame inside it. */
static size_t reply_size(struct conn *c, size_t *body_off, int *opcode) {
    unsigned char *b = c->rbuf;
    if (!ws_mode) {
        *body_off = 0;
        *opcode = 2;
        if (c->have < 8) return 0;
        uint32_t len = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 |
                       (uint32_t)b[7] << 24;
        return HEADER + (size_t)len;
    }
    if (c->have < 2) return 0;
    *opcode = b[0] & 0x0f;
    size_t len = b[1] & 0x7f, off = 2;
    if (len == 126) {
        if (c->have < 4) return 0;
        len = (size_t)b[2] << 8 | b[3];
        off = 4;
    } else if (len == 127) {
        if (c->have < 10) return 0;
        len = 0;
        for (int i = 0; i < 8; i++) len = len << 8 | b[2 + i];
        off = 10;
    }
    *body_off = off;
    return off + len;
}

int main(int argc, char **argv) {
    if (argc != 8 || (strcmp(argv[1], "tcp") != 0 && strcmp(argv[1], "ws") != 0)) {
        fprintf(stderr,
                "usage: pingpong tcp|ws HOST PORT CONNS WARMUP MESSAGES FRAME_BYTES\n");
        return 2;
    }
    ws_mode = strcmp(argv[1], "ws") == 0;
    const char *host = argv[2], *port = argv[3];
    long nconns = atol(argv[4]), warmup = atol(argv[5]), messages = atol(argv[6]);
    frame_bytes = (size_t)atol(argv[7]);
    if (nconns < 1 || warmup < 0 || messages < 1 || frame_bytes < HEADER ||
        frame_bytes > 65535) {
        fprintf(stderr, "pingpong: bad numbers (conns>=1, messages>=1, 32<=frame<=65535)\n");
        return 2;
    }
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    size_t rcap = frame_bytes + WS_MAX_HEAD + 4096;
    for (long i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        c->fd = connect_to(host, port);
        if (ws_mode) ws_handshake(c->fd, host, port);
        c->frame = malloc(frame_bytes);
        c->frame[0] = 'E';
        c->frame[1] = 'S';
        c->frame[2] = 1;
        c->frame[3] = 0;
        uint32_t len = (uint32_t)(frame_bytes - HEADER);
        for (int k = 0; k < 4; k++) c->frame[4 + k] = (unsigned char)(len >> (8 * k));
        for (size_t k = HEADER; k < frame_bytes; k++) c->frame[k] = (unsigned char)((k - HEADER) % 251);
        size_t head = ws_mode ? (frame_bytes < 126 ? 2 : 4) + 4 : 0;
        c->wire_len = head + frame_bytes;
        c->wire = malloc(c->wire_len);
        if (ws_mode) {
            c->wire[0] = 0x82; /* FIN + binary */
            if (frame_bytes < 126) {
                c->wire[1] = (unsigned char)(0x80 | frame_bytes);
            } else {
                c->wire[1] = 0x80 | 126;
                c->wire[2] = (unsigned char)(frame_bytes >> 8);
                c->wire[3] = (unsigned char)frame_bytes;
            }
        }
        c->rbuf = malloc(rcap);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    }
    long total = warmup + messages, done = 0;
    int64_t *lat = malloc(sizeof(int64_t) * (size_t)messages);
    struct rusage ru0 = {0}, ru1;
    int64_t wall0 = now_ns();
    if (warmup == 0) getrusage(RUSAGE_SELF, &ru0);
    for (long i = 0; i < nconns; i++) send_frame(&conns[i]);
    struct epoll_event events[256];
    while (done < total) {
        int n = epoll_wait(ep, events, 256, 10000);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        if (n == 0) {
            errno = 0;
            die("no reply within 10 s");
        }
        for (int e = 0; e < n && done < total; e++) {
            struct conn *c = events[e].data.ptr;
            ssize_t r = recv(c->fd, c->rbuf + c->have, rcap - c->have, 0);
            if (r == 0) {
                errno = 0;
                die("connection closed by peer");
            }
            if (r < 0) {
                if (errno == EINTR || errno == EAGAIN) continue;
                die("recv");
            }
            c->have += (size_t)r;
            for (;;) {
                size_t off = 0;
                int opcode = 0;
                size_t need = reply_size(c, &off, &opcode);
                if (need == 0 || c->have < need) break;
                if (need > rcap) {
                    errno = 0;
                    die("reply larger than the frame");
                }
                if (opcode == 0x9) { /* ping: answer with a masked pong, same payload */
                    unsigned char pong[6 + 125];
                    size_t plen = need - off;
                    pong[0] = 0x8a;
                    pong[1] = (unsigned char)(0x80 | plen);
                    uint32_t key = next_mask();
                    memcpy(pong + 2, &key, 4);
                    for (size_t k = 0; k < plen && k < 125; k++)
                        pong[6 + k] = c->rbuf[off + k] ^ pong[2 + (k & 3)];
                    write_all(c->fd, pong, 6 + plen);
                } else if (opcode == 0x8) {
                    errno = 0;
                    die("server closed the websocket");
                } else if (opcode == 0x2) {
                    int64_t t = now_ns();
                    if (need - off != frame_bytes || memcmp(c->rbuf + off, c->frame, frame_bytes)) {
                        errno = 0;
                        die("echo differs from the frame sent");
                    }
                    if (done >= warmup) lat[done - warmup] = t - c->sent_ns;
                    done++;
                    if (done == warmup) getrusage(RUSAGE_SELF, &ru0), wall0 = now_ns();
                    c->seq++;
                    if (done + nconns <= total) send_frame(c);
                }
                c->have -= need;
                if (c->have) memmove(c->rbuf, c->rbuf + need, c->have);
            }
        }
    }
    getrusage(RUSAGE_SELF, &ru1);
    int64_t wall1 = now_ns();
    /* Percentiles of the measured window: a partial selection is plenty for two ranks. */
    long k50 = messages / 2, k99 = (long)(messages * 0.99);
    if (k99 >= messages) k99 = messages - 1;
    int cmp(const void *a, const void *b);
    qsort(lat, (size_t)messages, sizeof *lat, cmp);
    double us = rusage_s(&ru1, 0) - rusage_s(&ru0, 0), ss = rusage_s(&ru1, 1) - rusage_s(&ru0, 1);
    printf("{\"messages\":%ld,\"cpu_s\":%.6f,\"user_s\":%.6f,\"sys_s\":%.6f,\"wall_s\":%.6f,"
           "\"p50_us\":%.1f,\"p99_us\":%.1f,\"failures\":0}\n",
           messages, us + ss, us, ss, (wall1 - wall0) / 1e9, lat[k50] / 1e3, lat[k99] / 1e3);
    for (long i = 0; i < nconns; i++) close(conns[i].fd);
    return 0;
}

int cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}
