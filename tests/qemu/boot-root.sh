#!/bin/busybox sh
# /init of the systemd test's initramfs (cross/qemu-systemd.sh packs it): loads the virtio disk
# and ext4 modules, mounts the Debian root (/dev/vda, a throw-away snapshot), drops the test in
# (/payload → /root/qemu-test, and its unit enabled), then hands over to systemd as PID 1.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in /modules/*.ko; do insmod "$m" || echo "boot: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /newroot
mount -t ext4 -o rw,noatime /dev/vda /newroot || { echo "boot: cannot mount /dev/vda"; poweroff -f; }
cp -a /payload /newroot/root/qemu-test
cp /payload/ocelli-qemu-test.service /newroot/etc/systemd/system/
mkdir -p /newroot/etc/systemd/system/multi-user.target.wants
ln -sf ../ocelli-qemu-test.service /newroot/etc/systemd/system/multi-user.target.wants/
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /lib/systemd/systemd
