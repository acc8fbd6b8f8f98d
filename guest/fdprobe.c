/*
 * fdprobe: the probes of flightdeck's tiny test guest. Tests and benchmarks read what it prints
 * on the serial console; the host-side parser is src/host/images/probes.ts.
 *
 * Why C and not busybox sh: the heartbeat must tick every ~10 ms with nanosecond timestamps,
 * and a shell loop under TCG forks `date`/`cat` per tick and manages a few ticks a second.
 * Compiled with gcc -static at image build time; it needs nothing from the guest but a kernel.
 *
 * Every line is produced by one write(2) to the console. The tty layer holds its write lock
 * for a whole write, so lines from the probe processes never interleave; kernel printk can
 * still break into a line, which is why every line ends with " #": a line cut short by printk
 * has no terminator and the parser drops it instead of reading a truncated number.
 *
 * The console protocol is for tests and benchmarks, who ask for it with fd.probes=1 on the
 * kernel command line. Without it only the power button and hot-plug processes run, and they
 * print nothing but a line for people on power off: the demo guest is a quiet machine.
 *
 * Processes (forked from main, which exits once all of them report ready):
 *   heartbeat  FD-HB <seq> <monotonic_ns> #           every fd.hb_ms (default 10)
 *   uptime     FD-UPTIME <seconds> #                  every fd.uptime_ms (default 1000)
 *   counter    FD-COUNTER <n> #                       every fd.counter_ms (default 50), printed
 *              only after the record holding n is written with O_DIRECT|O_DSYNC and fdatasync'd;
 *              refuses (FD-COUNTER-ERROR) a disk whose ext4 is not the tiny image's
 *   echo       TCP echo on fd.echo_port (default 7), IPv4 and IPv6, a process per connection
 *   powerbtn   on the ACPI power button: FD-POWERBTN #, sync, remount / read-only, power off
 *   hotplug    every second: onlines hot-plugged CPUs, starts DHCP on new NICs, and prints
 *              FD-CPUS <online> # and FD-MEM <MemTotal KiB> # at start and on every change
 *              (vCPU hot-plug, memory hot-plug, the balloon)
 *   dirtier    off unless fd.dirty_mb=N (N > 0): writes every 4 KiB page of an N MiB buffer in a
 *              loop, as fast as it can or at fd.dirty_mbps=R MiB/s, so a live migration has
 *              memory that keeps changing; FD-DIRTY <mib> <pages_written_total> # every second
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/input.h>
#include <linux/reboot.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Counter record layout; must match src/host/images/counter.ts. */
#define COUNTER_MAGIC "FDCOUNT1"
#define COUNTER_RECORD_BYTES 4096
#define DEFAULT_COUNTER_OFFSET (56ULL * 1024 * 1024)

static long opt_hb_ms = 10, opt_uptime_ms = 1000, opt_counter_ms = 50, opt_echo_port = 7;
static long opt_dirty_mb = 0, opt_dirty_mbps = 0, opt_probes = 0;
static unsigned long long opt_counter_offset = DEFAULT_COUNTER_OFFSET;
static char opt_counter_dev[64] = "/dev/vda";
static int ready_fd = -1;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 3, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof buf - 4) n = sizeof buf - 4;
  memcpy(buf + n, " #\n", 3);
  ssize_t w = write(STDOUT_FILENO, buf, (size_t)n + 3);
  (void)w;
}

static void read_cmdline(void) {
  /* rcS passes the root disk; fd.counter_dev= on the kernel cmdline still wins. */
  const char *env_dev = getenv("FD_COUNTER_DEV");
  if (env_dev && *env_dev) snprintf(opt_counter_dev, sizeof opt_counter_dev, "%s", env_dev);
  char buf[4096];
  int fd = open("/proc/cmdline", O_RDONLY);
  if (fd < 0) return;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return;
  buf[n] = 0;
  for (char *tok = strtok(buf, " \n"); tok; tok = strtok(NULL, " \n")) {
    if (!strncmp(tok, "fd.probes=", 10)) opt_probes = atol(tok + 10);
    else if (!strncmp(tok, "fd.hb_ms=", 9)) opt_hb_ms = atol(tok + 9);
    else if (!strncmp(tok, "fd.uptime_ms=", 13)) opt_uptime_ms = atol(tok + 13);
    else if (!strncmp(tok, "fd.counter_ms=", 14)) opt_counter_ms = atol(tok + 14);
    else if (!strncmp(tok, "fd.echo_port=", 13)) opt_echo_port = atol(tok + 13);
    else if (!strncmp(tok, "fd.counter_offset=", 18)) opt_counter_offset = strtoull(tok + 18, NULL, 0);
    else if (!strncmp(tok, "fd.dirty_mb=", 12)) opt_dirty_mb = atol(tok + 12);
    else if (!strncmp(tok, "fd.dirty_mbps=", 14)) opt_dirty_mbps = atol(tok + 14);
    else if (!strncmp(tok, "fd.counter_dev=", 15)) snprintf(opt_counter_dev, sizeof opt_counter_dev, "%s", tok + 15);
  }
  if (opt_hb_ms < 1) opt_hb_ms = 1;
  if (opt_uptime_ms < 10) opt_uptime_ms = 10;
  if (opt_counter_ms < 0) opt_counter_ms = 0;
  if (opt_dirty_mb < 0) opt_dirty_mb = 0;
  if (opt_dirty_mbps < 0) opt_dirty_mbps = 0;
}

static void signal_ready(void) {
  char c = 'r';
  ssize_t w = write(ready_fd, &c, 1);
  (void)w;
  close(ready_fd);
  ready_fd = -1;
}

static void ts_add_ms(struct timespec *t, long ms) {
  t->tv_sec += ms / 1000;
  t->tv_nsec += (ms % 1000) * 1000000L;
  if (t->tv_nsec >= 1000000000L) {
    t->tv_sec++;
    t->tv_nsec -= 1000000000L;
  }
}

/* Ticks on absolute deadlines so the interval does not drift; after a long stall (VM paused,
 * migration downtime) it resumes from now instead of printing a burst of catch-up lines. */
static void tick_wait(struct timespec *next, long ms) {
  struct timespec now;
  ts_add_ms(next, ms);
  clock_gettime(CLOCK_MONOTONIC, &now);
  if (now.tv_sec > next->tv_sec + 1) *next = now;
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, next, NULL) == EINTR) {
  }
}

static void heartbeat(void) {
  struct timespec next, now;
  unsigned long long seq = 0;
  signal_ready();
  clock_gettime(CLOCK_MONOTONIC, &next);
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    say("FD-HB %llu %llu", seq++, (unsigned long long)now.tv_sec * 1000000000ULL + (unsigned long long)now.tv_nsec);
    tick_wait(&next, opt_hb_ms);
  }
}

static void uptime(void) {
  struct timespec next, now;
  signal_ready();
  clock_gettime(CLOCK_MONOTONIC, &next);
  for (;;) {
    /* CLOCK_BOOTTIME is what /proc/uptime shows. */
    clock_gettime(CLOCK_BOOTTIME, &now);
    say("FD-UPTIME %llu.%02ld", (unsigned long long)now.tv_sec, now.tv_nsec / 10000000L);
    tick_wait(&next, opt_uptime_ms);
  }
}

static void put_le64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t get_le64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* Record: magic(8) n(le64) ~n(le64), rest zero. ~n catches a torn or foreign record. */
static void counter(void) {
  unsigned char *rec;
  if (posix_memalign((void **)&rec, 4096, COUNTER_RECORD_BYTES)) _exit(1);
  int fd = -1;
  for (int tries = 0; fd < 0; tries++) {
    fd = open(opt_counter_dev, O_RDWR | O_DIRECT | O_DSYNC);
    if (fd < 0) {
      if (tries == 0) say("FD-COUNTER-ERROR open %s errno=%d", opt_counter_dev, errno);
      if (tries == 50) signal_ready(); /* do not hold up the boot forever */
      usleep(100000);
    }
  }
  /* The record goes outside the filesystem, so never write it to a disk that is not a tiny
   * image (a kernel reused with another root disk): its ext4 must be labelled tiny-root and
   * end before the record. */
  unsigned char *sb = rec;
  uint64_t fs_end = 0;
  int ours = pread(fd, sb, 4096, 0) == 4096 && sb[1024 + 56] == 0x53 && sb[1024 + 57] == 0xef &&
             !strncmp((const char *)sb + 1024 + 120, "tiny-root", 16);
  if (ours) {
    uint64_t blocks = (uint64_t)sb[1024 + 4] | (uint64_t)sb[1024 + 5] << 8 | (uint64_t)sb[1024 + 6] << 16 |
                      (uint64_t)sb[1024 + 7] << 24;
    fs_end = blocks * (1024ULL << sb[1024 + 24]);
    ours = fs_end <= opt_counter_offset;
  }
  if (!ours) {
    say("FD-COUNTER-ERROR %s is not a tiny image disk (ext4 label tiny-root ending before %llu): counter off",
        opt_counter_dev, opt_counter_offset);
    signal_ready();
    for (;;) pause();
  }
  uint64_t n = 0;
  if (pread(fd, rec, COUNTER_RECORD_BYTES, (off_t)opt_counter_offset) == COUNTER_RECORD_BYTES &&
      !memcmp(rec, COUNTER_MAGIC, 8) && get_le64(rec + 8) == ~get_le64(rec + 16))
    n = get_le64(rec + 8);
  say("FD-COUNTER-START %llu", (unsigned long long)n);
  if (ready_fd >= 0) signal_ready();
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  for (;;) {
    n++;
    memset(rec, 0, COUNTER_RECORD_BYTES);
    memcpy(rec, COUNTER_MAGIC, 8);
    put_le64(rec + 8, n);
    put_le64(rec + 16, ~n);
    for (;;) {
      if (pwrite(fd, rec, COUNTER_RECORD_BYTES, (off_t)opt_counter_offset) == COUNTER_RECORD_BYTES &&
          fdatasync(fd) == 0)
        break;
      say("FD-COUNTER-ERROR write errno=%d", errno);
      sleep(1);
    }
    say("FD-COUNTER %llu", (unsigned long long)n);
    tick_wait(&next, opt_counter_ms);
  }
}

static int listen_on(int family) {
  int s = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int r;
  if (family == AF_INET6) {
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)opt_echo_port)};
    r = bind(s, (struct sockaddr *)&a, sizeof a);
  } else {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt_echo_port)};
    r = bind(s, (struct sockaddr *)&a, sizeof a);
  }
  if (r < 0 || listen(s, 64) < 0) {
    close(s);
    return -1;
  }
  return s;
}

/* A process per connection: a client that stops reading blocks only its own connection, and
 * connections are few and long-lived (they must survive live migration). */
static void echo_connection(int c) {
  char buf[65536];
  int one = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  for (;;) {
    ssize_t n = read(c, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) _exit(0);
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(c, buf + off, (size_t)(n - off));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) _exit(0);
      off += w;
    }
  }
}

static void echo(void) {
  struct pollfd fds[2];
  int nfds = 0;
  int s4 = listen_on(AF_INET), s6 = listen_on(AF_INET6);
  if (s4 >= 0) fds[nfds++] = (struct pollfd){.fd = s4, .events = POLLIN};
  if (s6 >= 0) fds[nfds++] = (struct pollfd){.fd = s6, .events = POLLIN};
  if (!nfds) say("FD-ECHO-ERROR listen errno=%d", errno);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGCHLD, SIG_IGN); /* connection processes reap themselves */
  signal_ready();
  for (;;) {
    if (poll(fds, (nfds_t)nfds, -1) < 0) continue;
    for (int i = 0; i < nfds; i++) {
      if (!fds[i].revents) continue;
      int c = accept4(fds[i].fd, NULL, NULL, SOCK_CLOEXEC);
      if (c < 0) continue;
      pid_t pid = fork();
      if (pid == 0) {
        for (int j = 0; j < nfds; j++) close(fds[j].fd);
        echo_connection(c);
      }
      close(c);
    }
  }
}

static int has_power_key(int fd) {
  unsigned long bits[KEY_MAX / (8 * sizeof(long)) + 1] = {0};
  if (ioctl(fd, EVIOCGBIT(EV_KEY, sizeof bits), bits) < 0) return 0;
  return (bits[KEY_POWER / (8 * sizeof(long))] >> (KEY_POWER % (8 * sizeof(long)))) & 1;
}

/* ACPI shutdown without acpid: the cloud kernel's button driver reports the power button as
 * an input device; on a press we do what an orderly guest would and power off. */
static void powerbtn(void) {
  struct pollfd fds[16];
  int nfds = 0;
  DIR *d = opendir("/dev/input");
  struct dirent *e;
  while (d && (e = readdir(d)) && nfds < 16) {
    if (strncmp(e->d_name, "event", 5)) continue;
    char path[300];
    snprintf(path, sizeof path, "/dev/input/%s", e->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    if (has_power_key(fd)) fds[nfds++] = (struct pollfd){.fd = fd, .events = POLLIN};
    else close(fd);
  }
  if (d) closedir(d);
  signal_ready();
  if (!nfds) pause();
  for (;;) {
    if (poll(fds, (nfds_t)nfds, -1) < 0) continue;
    for (int i = 0; i < nfds; i++) {
      struct input_event ev;
      if (!(fds[i].revents & POLLIN) || read(fds[i].fd, &ev, sizeof ev) != sizeof ev) continue;
      if (ev.type == EV_KEY && ev.code == KEY_POWER && ev.value == 1) {
        if (opt_probes) say("FD-POWERBTN");
        else {
          static const char msg[] = "\r\npower button pressed: powering off\r\n";
          ssize_t w = write(STDOUT_FILENO, msg, sizeof msg - 1);
          (void)w;
        }
        kill(-1, SIGTERM); /* everything but us and init */
        sync();
        mount("/", "/", NULL, MS_REMOUNT | MS_RDONLY, NULL);
        sync();
        if (opt_probes) say("FD-POWEROFF");
        reboot(LINUX_REBOOT_CMD_POWER_OFF);
      }
    }
  }
}

static int count_online_cpus(void) {
  /* Hot-plugged CPUs arrive offline; udev would online them, this guest has no udev. */
  DIR *d = opendir("/sys/devices/system/cpu");
  struct dirent *e;
  int online = 0;
  while (d && (e = readdir(d))) {
    if (strncmp(e->d_name, "cpu", 3) || e->d_name[3] < '0' || e->d_name[3] > '9') continue;
    char path[300], c = '1';
    snprintf(path, sizeof path, "/sys/devices/system/cpu/%s/online", e->d_name);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      if (read(fd, &c, 1) == 1 && c == '0' && pwrite(fd, "1", 1, 0) == 1) c = '1';
      close(fd);
    }
    if (c == '1') online++; /* cpu0 has no online file: always online */
  }
  if (d) closedir(d);
  return online;
}

static long mem_total_kib(void) {
  char buf[256];
  int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  char *p = strstr(buf, "MemTotal:");
  return p ? atol(p + 9) : -1;
}

#define MAX_NICS 64
static void hotplug(void) {
  char seen[MAX_NICS][256];
  int nseen = 0, cpus = -1;
  long mem = -1;
  /* NICs present now are rcS's to configure; this process handles the ones added later. */
  DIR *d = opendir("/sys/class/net");
  struct dirent *e;
  while (d && (e = readdir(d)) && nseen < MAX_NICS)
    if (e->d_name[0] != '.') snprintf(seen[nseen++], sizeof seen[0], "%s", e->d_name);
  if (d) closedir(d);
  signal(SIGCHLD, SIG_IGN); /* udhcpc children reap themselves */
  signal_ready();
  for (;;) {
    int c = count_online_cpus();
    if (c != cpus && opt_probes) say("FD-CPUS %d", c);
    cpus = c;
    long m = mem_total_kib();
    if (m != mem && opt_probes) say("FD-MEM %ld", m);
    mem = m;
    d = opendir("/sys/class/net");
    while (d && (e = readdir(d))) {
      if (e->d_name[0] == '.') continue;
      int known = 0;
      for (int i = 0; i < nseen && !known; i++) known = !strcmp(seen[i], e->d_name);
      if (known || nseen == MAX_NICS) continue;
      snprintf(seen[nseen++], sizeof seen[0], "%s", e->d_name);
      if (fork() == 0) {
        /* udhcpc's own chatter stays off the console; the script prints FD-IP */
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
          dup2(null, STDOUT_FILENO);
          dup2(null, STDERR_FILENO);
        }
        execl("/sbin/udhcpc", "udhcpc", "-i", e->d_name, "-s", "/etc/fd/udhcpc.script", "-b", "-t", "3", "-T", "1",
              "-A", "3", (char *)NULL);
        _exit(127);
      }
    }
    if (d) closedir(d);
    sleep(1);
  }
}

/* The migration benchmark's "busy guest": one write per page is enough to make QEMU resend the
 * page, and the value changes on every pass so no page is ever all zeros (QEMU sends zero pages
 * as a flag, which would make the load cheap). Paced in 10 ms slices when fd.dirty_mbps is set.
 * Runs at the lowest priority so the heartbeat still ticks on a single vCPU. */
static void dirtier(void) {
  const size_t page = 4096, bytes = (size_t)opt_dirty_mb << 20, pages = bytes / page;
  unsigned char *buf = malloc(bytes);
  if (!buf) {
    say("FD-DIRTY-ERROR cannot allocate %ld MiB", opt_dirty_mb);
    signal_ready();
    pause();
    return;
  }
  nice(19);
  signal_ready();
  /* Pages per 10 ms slice when paced; 0 = unpaced. */
  const size_t slice = opt_dirty_mbps ? ((size_t)opt_dirty_mbps << 20) / page / 100 + 1 : 0;
  unsigned long long written = 0;
  unsigned char pass = 1;
  struct timespec next, now, report;
  clock_gettime(CLOCK_MONOTONIC, &next);
  report = next;
  for (size_t i = 0;; ) {
    size_t n = slice ? slice : 256;
    for (size_t k = 0; k < n; k++) {
      buf[i * page + (i & 63) * 8] = pass;
      if (++i == pages) {
        i = 0;
        if (++pass == 0) pass = 1;
      }
    }
    written += n;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > report.tv_sec || (now.tv_sec == report.tv_sec && now.tv_nsec >= report.tv_nsec)) {
      say("FD-DIRTY %ld %llu", opt_dirty_mb, written);
      report = now;
      ts_add_ms(&report, 1000);
    }
    if (slice) tick_wait(&next, 10);
  }
}

int main(void) {
  read_cmdline();
  int console = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
  if (console >= 0) {
    dup2(console, STDOUT_FILENO);
    dup2(console, STDERR_FILENO);
    close(console);
  }
  void (*all[])(void) = {heartbeat, uptime, counter, echo, powerbtn, hotplug, dirtier};
  void (*quiet[])(void) = {powerbtn, hotplug};
  void (**probes)(void) = opt_probes ? all : quiet;
  /* The dirtier is last: when it is off it is not even forked (the default guest is unchanged). */
  int nprobes = opt_probes ? (int)(sizeof all / sizeof all[0]) - (opt_dirty_mb > 0 ? 0 : 1) : 2;
  int pipefd[2];
  if (pipe(pipefd) < 0) return 1;
  for (int i = 0; i < nprobes; i++) {
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
      close(pipefd[0]);
      ready_fd = pipefd[1];
      setsid();
      if (probes[i] == heartbeat) {
        /* The heartbeat is the probe that measures stalls: keep it ahead of the others. */
        nice(-10);
      }
      if (probes[i] == counter && opt_counter_ms == 0) {
        signal_ready();
        pause();
      }
      probes[i]();
      _exit(0);
    }
  }
  close(pipefd[1]);
  /* Exit once every probe is running, so the boot script can announce FD-READY truthfully. */
  char c;
  for (int got = 0; got < nprobes && read(pipefd[0], &c, 1) == 1;) got++;
  return 0;
}
