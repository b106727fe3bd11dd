/*
 * relay: a VM's NIC as the datagram transport sees it, for benchmarks. Opens TAP device IFNAME in
 * the current network namespace (no vnet header, no packet info: the guest's kernel then sends one
 * MTU-sized frame per write with full checksums, as a virtio-net VM behind qemu's dgram netdev or
 * vfkit does), binds unix datagram socket LOCAL, connects it to PATH (vmnat's --socket) and moves
 * frames both ways: TAP reads go out with sendmmsg in batches, datagrams in with recvmmsg are written
 * to the TAP one by one (a char device has no batch write). Connected like vfkit's socket, so the
 * kernel's net.unix.max_dgram_qlen does not throttle vmnat's sends to it.
 *
 *   relay [--offload] IFNAME LOCAL PATH      (built by bench/lib/engines.ts with cc -O2)
 *
 * --offload: as krunkit's offloading=on (libkrun's unixgram backend): the TAP gets a vnet header
 * and the CSUM/TSO offloads, so the guest's kernel sends up to 64 KiB TCP frames with partial
 * checksums; the relay strips the header and forwards the bare frame (nothing on the wire says
 * the checksum is partial), and writes what comes back with an all-zero header (the guest's
 * kernel then checks the checksum, and takes a frame above its MTU whole).
 *
 * Exits on SIGTERM/SIGINT or when either side fails; prints "ready" once the TAP is up and the
 * socket connected. Not part of vmnat: it only stands in for a VM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BATCH 64
#define FRAME 65600

static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }

static void die(const char* what) {
  fprintf(stderr, "relay: %s: %s\n", what, strerror(errno));
  exit(1);
}

int main(int argc, char** argv) {
  int offload = argc > 1 && strcmp(argv[1], "--offload") == 0;
  if (offload) {
    argv++;
    argc--;
  }
  if (argc != 4) {
    fprintf(stderr, "usage: relay [--offload] IFNAME LOCAL PATH\n");
    return 2;
  }
  const size_t hdr = offload ? 10 : 0;
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  int tap = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (tap < 0) die("/dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (offload ? IFF_VNET_HDR : 0);
  strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
  if (ioctl(tap, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
  if (offload && ioctl(tap, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) < 0) die("TUNSETOFFLOAD");

  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s < 0) die("socket");
  int buf = 4 << 20;
  setsockopt(s, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  setsockopt(s, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  struct sockaddr_un local = {.sun_family = AF_UNIX}, remote = {.sun_family = AF_UNIX};
  strncpy(local.sun_path, argv[2], sizeof local.sun_path - 1);
  strncpy(remote.sun_path, argv[3], sizeof remote.sun_path - 1);
  unlink(argv[2]);
  if (bind(s, (struct sockaddr*)&local, sizeof local) < 0) die("bind");
  if (connect(s, (struct sockaddr*)&remote, sizeof remote) < 0) die("connect");
  printf("ready\n");
  fflush(stdout);

  static char rx[BATCH][FRAME];
  static char tx[BATCH][FRAME];
  struct mmsghdr rmsg[BATCH], tmsg[BATCH];
  struct iovec riov[BATCH], tiov[BATCH];
  int tn = 0;  // frames read from the TAP, not yet sent
  int tsent = 0;
  while (!stop) {
    struct pollfd p[2] = {{.fd = tap, .events = tn == 0 ? POLLIN : 0}, {.fd = s, .events = POLLIN | (tn ? POLLOUT : 0)}};
    if (poll(p, 2, 200) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if ((p[0].revents | p[1].revents) & (POLLERR | POLLHUP | POLLNVAL)) break;
    // guest → vmnat
    if (tn == 0 && (p[0].revents & POLLIN)) {
      while (tn < BATCH) {
        ssize_t r = read(tap, tx[tn], FRAME);
        if (r <= (ssize_t)hdr) break;
        tiov[tn].iov_base = tx[tn] + hdr;
        tiov[tn].iov_len = (size_t)r - hdr;
        memset(&tmsg[tn], 0, sizeof tmsg[tn]);
        tmsg[tn].msg_hdr.msg_iov = &tiov[tn];
        tmsg[tn].msg_hdr.msg_iovlen = 1;
        tn++;
      }
      tsent = 0;
    }
    if (tn > 0) {
      int r = sendmmsg(s, tmsg + tsent, (unsigned)(tn - tsent), MSG_DONTWAIT);
      if (r < 0 && errno != EAGAIN && errno != EINTR) die("sendmmsg");
      if (r > 0) tsent += r;
      if (tsent == tn) tn = tsent = 0;
    }
    // vmnat → guest
    if (p[1].revents & POLLIN) {
      for (int i = 0; i < BATCH; i++) {
        memset(rx[i], 0, hdr);
        riov[i].iov_base = rx[i] + hdr;
        riov[i].iov_len = FRAME - hdr;
        memset(&rmsg[i], 0, sizeof rmsg[i]);
        rmsg[i].msg_hdr.msg_iov = &riov[i];
        rmsg[i].msg_hdr.msg_iovlen = 1;
      }
      int n = recvmmsg(s, rmsg, BATCH, MSG_DONTWAIT, NULL);
      if (n < 0 && errno != EAGAIN && errno != EINTR) die("recvmmsg");
      for (int i = 0; i < n; i++) {
        if (write(tap, rx[i], rmsg[i].msg_len + hdr) < 0 && errno != EAGAIN) die("write tap");
      }
    }
  }
  unlink(argv[2]);
  return 0;
}
