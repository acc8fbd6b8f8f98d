# Sourced by the boot scripts. fd.probes=1 on the kernel command line asks for the console
# protocol that tests and benchmarks read (FD-* lines, the heartbeat, counter and echo probes);
# without it the guest is a quiet machine for people: a banner and a login prompt.
case " $(cat /proc/cmdline 2>/dev/null) " in
  *" fd.probes=1 "*) FD_PROBES=1 ;;
  *) FD_PROBES=0 ;;
esac
# say LINE: one protocol line on the console, only when the probes are on.
say() { [ "$FD_PROBES" = 1 ] && echo "$* #" >/dev/console; return 0; }
