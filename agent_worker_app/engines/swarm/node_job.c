/* agent-worker's swarm helper job: the only program of its image (FROM scratch, static).

   node-job ACTION RUN_ID SELF

   Through the node's engine socket, signals (ACTION SIGTERM, SIGINT or SIGKILL) or removes
   (ACTION remove) the containers labelled agent-worker.run-id=RUN_ID, then removes its own
   container (labelled agent-worker.helper=SELF): the swarm leaves a job's container on its node.

   Its arguments are data, never a shell fragment or a path: each is checked against a fixed
   set or a narrow pattern before use, and nothing runs but this program (no shell, no other
   file of any image). Containers are found by label alone; only the top-level "Id" of each
   object the engine lists is used, and only when it is 64 hexadecimal digits. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define SOCKET_PATH "/var/run/docker.sock"
#define MAX_IDS 4096
#define ID_LEN 64
#define MAX_LABEL 128

static char ids[MAX_IDS][ID_LEN + 1];
static int n_ids;

static void die(const char *what) {
    fprintf(stderr, "node-job: %s\n", what);
    exit(2);
}

/* 1 to 128 characters of [A-Za-z0-9_.-], not starting with a dot or dash. */
static int valid_label(const char *text) {
    size_t n = strlen(text);
    if (n == 0 || n > MAX_LABEL || text[0] == '.' || text[0] == '-') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == '-';
        if (!ok) return 0;
    }
    return 1;
}

static int engine(void) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) die("no socket");
    struct timeval limit = {60, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    struct sockaddr_un where = {.sun_family = AF_UNIX};
    strcpy(where.sun_path, SOCKET_PATH);
    if (connect(fd, (struct sockaddr *)&where, sizeof where) < 0) die("cannot reach the engine");
    return fd;
}

static void send_all(int fd, const char *text) {
    size_t left = strlen(text);
    while (left > 0) {
        ssize_t sent = write(fd, text, left);
        if (sent < 0 && errno == EINTR) continue;
        if (sent <= 0) die("cannot talk to the engine");
        text += sent;
        left -= (size_t)sent;
    }
}

/* HTTP/1.0: the engine answers without chunks and closes the connection at the end. */
static int request(const char *method, const char *path) {
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.0\r\nHost: docker\r\nContent-Length: 0\r\n\r\n", method, path);
    if (n < 0 || (size_t)n >= sizeof head) die("request too long");
    int fd = engine();
    send_all(fd, head);
    return fd;
}

/* The status code, with the headers read past; the body is what the fd has left. */
static int status(int fd) {
    char line[16] = {0};
    size_t got = 0;
    char c;
    int ends = 0; /* how much of "\r\n\r\n" was just read */
    while (ends < 4) {
        ssize_t n = read(fd, &c, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        if (got < sizeof line - 1) line[got++] = c;
        ends = (c == (ends % 2 == 0 ? '\r' : '\n')) ? ends + 1 : (c == '\r' ? 1 : 0);
    }
    if (strncmp(line, "HTTP/1.", 7) != 0 || line[8] != ' ') return -1;
    return atoi(line + 9);
}

static int call(const char *method, const char *path) {
    int fd = request(method, path);
    int code = status(fd);
    close(fd);
    return code;
}

static int hex_id(const char *text, size_t n) {
    if (n != ID_LEN) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return 0;
    }
    return 1;
}

/* The ids of the containers with this label: the top-level "Id" string of each object in the
   engine's JSON array, read by a scanner that knows strings (with escapes) and nesting. */
static void list(const char *run_label) {
    char path[512];
    /* filters={"label":["<run_label>"]}, URL-encoded; the label is checked to need no escape */
    snprintf(path, sizeof path,
             "/containers/json?all=1&filters=%%7B%%22label%%22%%3A%%5B%%22%s%%22%%5D%%7D",
             run_label);
    int fd = request("GET", path);
    if (status(fd) != 200) die("the engine refused the list of containers");
    int depth = 0, in_string = 0, escaped = 0, key_is_id = 0, want_value = 0;
    char token[ID_LEN + 2];
    size_t token_len = 0;
    char buffer[65536];
    ssize_t got;
    while ((got = read(fd, buffer, sizeof buffer)) != 0) {
        if (got < 0) {
            if (errno == EINTR) continue;
            die("cannot read the list of containers");
        }
        for (ssize_t i = 0; i < got; i++) {
            char c = buffer[i];
            if (in_string) {
                if (escaped) {
                    escaped = 0;
                    token_len = sizeof token; /* an escape: never an id or the key Id */
                } else if (c == '\\') {
                    escaped = 1;
                } else if (c == '"') {
                    in_string = 0;
                    int fits = token_len <= ID_LEN;
                    if (want_value && depth == 2 && fits && hex_id(token, token_len)) {
                        if (n_ids == MAX_IDS) die("too many containers");
                        memcpy(ids[n_ids], token, ID_LEN);
                        ids[n_ids++][ID_LEN] = 0;
                    }
                    key_is_id = !want_value && depth == 2 && token_len == 2 &&
                                memcmp(token, "Id", 2) == 0;
                    want_value = 0;
                } else {
                    if (token_len < ID_LEN + 1) token[token_len] = c;
                    if (token_len < sizeof token) token_len++;
                }
                continue;
            }
            switch (c) {
            case '"':
                in_string = 1;
                token_len = 0;
                break;
            case ':':
                want_value = key_is_id;
                key_is_id = 0;
                break;
            case '{':
            case '[':
                depth++;
                want_value = key_is_id = 0;
                break;
            case '}':
            case ']':
                depth--;
                want_value = key_is_id = 0;
                break;
            case ',':
                want_value = key_is_id = 0;
                break;
            default:
                break;
            }
        }
    }
    close(fd);
    if (depth != 0 || in_string) die("the engine's list of containers was cut short");
}

int main(int argc, char **argv) {
    if (argc != 4) die("usage: node-job SIGTERM|SIGINT|SIGKILL|remove RUN_ID SELF");
    const char *action = argv[1];
    int remove = strcmp(action, "remove") == 0;
    if (!remove && strcmp(action, "SIGTERM") != 0 && strcmp(action, "SIGINT") != 0 &&
        strcmp(action, "SIGKILL") != 0)
        die("unknown action");
    if (!valid_label(argv[2]) || !valid_label(argv[3])) die("a label that is not a plain name");

    char label[MAX_LABEL + 64], path[256];
    snprintf(label, sizeof label, "agent-worker.run-id%%3D%s", argv[2]);
    list(label);
    int failed = 0;
    for (int i = 0; i < n_ids; i++) {
        if (remove)
            snprintf(path, sizeof path, "/containers/%.64s?force=1&v=1", ids[i]);
        else
            snprintf(path, sizeof path, "/containers/%.64s/kill?signal=%.8s", ids[i], action);
        int code = call(remove ? "DELETE" : "POST", path);
        /* gone already, or not running: nothing left to do for it */
        if (code != 204 && code != 200 && code != 404 && code != 409) failed = 1;
    }
    printf("node-job: %s: %d container(s) of run %s\n", action, n_ids, argv[2]);
    fflush(stdout);

    n_ids = 0;
    snprintf(label, sizeof label, "agent-worker.helper%%3D%s", argv[3]);
    list(label);
    for (int i = 0; i < n_ids; i++) {
        snprintf(path, sizeof path, "/containers/%.64s?force=1&v=1", ids[i]);
        call("DELETE", path); /* its own: the engine kills it on the way */
    }
    return failed;
}
