/* Presses a button control of a V4L2 device, found by name: the emulated camera test uses it on
 * vivid's "Disconnect", which makes the driver behave like an unplugged USB camera (every ioctl on
 * an open file then fails with ENODEV). Built static by cross/qemu-camera.sh (busybox has no
 * v4l2-ctl).
 *
 * usage: v4l2button DEVICE NAME    exit status 0 once pressed, 1 otherwise. */
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: v4l2button DEVICE NAME\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    struct v4l2_queryctrl q = {.id = V4L2_CTRL_FLAG_NEXT_CTRL};
    while (ioctl(fd, VIDIOC_QUERYCTRL, &q) == 0) {
        if (q.type == V4L2_CTRL_TYPE_BUTTON && strcmp((const char *)q.name, argv[2]) == 0) {
            struct v4l2_control c = {.id = q.id, .value = 0};
            if (ioctl(fd, VIDIOC_S_CTRL, &c) < 0) {
                fprintf(stderr, "v4l2button: %s: pressing \"%s\": %s\n", argv[1], argv[2], strerror(errno));
                return 1;
            }
            return 0;
        }
        q.id |= V4L2_CTRL_FLAG_NEXT_CTRL;
    }
    fprintf(stderr, "v4l2button: %s: no button control named \"%s\"\n", argv[1], argv[2]);
    return 1;
}
