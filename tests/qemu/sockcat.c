/* The raw JSON client of the emulated camera test: copies LINES lines from a Unix stream socket
 * to stdout, unchanged (busybox has no Unix-socket nc, and `ocelli tail` reformats for people).
 * Built static by cross/qemu-camera.sh.
 *
 * usage: sockcat SOCKET LINES    exit status 0 once LINES lines are copied, 1 otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: sockcat SOCKET LINES\n");
        return 2;
    }
    long want = strtol(argv[2], NULL, 10);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(argv[1]) >= sizeof addr.sun_path) {
        fprintf(stderr, "sockcat: %s: path too long for a Unix socket\n", argv[1]);
        return 2;
    }
    strcpy(addr.sun_path, argv[1]);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror(argv[1]);
        return 1;
    }
    FILE *in = fdopen(fd, "r");
    char *line = NULL;
    size_t cap = 0;
    long got = 0;
    while (got < want && getline(&line, &cap, in) > 0) {
        fputs(line, stdout);
        got++;
    }
    fflush(stdout);
    if (got < want) fprintf(stderr, "sockcat: %s closed after %ld of %ld lines\n", argv[1], got, want);
    return got == want ? 0 : 1;
}
