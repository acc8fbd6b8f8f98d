#!/bin/sh
# Reads configuration media other engineers' tests attach: a NoCloud seed (an ISO with
# meta-data/user-data, label cidata) and an OVF environment ISO (ovf-env.xml). Every CD-ROM
# and extra virtio disk is tried; what is found is printed as FD-SEED / FD-OVFENV lines (with
# fd.probes=1; the hostname is applied either way).
# The cloud kernel has no AHCI driver: on q35 attach CD-ROMs as scsi-cd on virtio-scsi.
. /etc/fd/probes.sh

# sr devices appear asynchronously after virtio_scsi/ata_piix probe; wait briefly for them
# only when a SCSI or ATA host exists.
if ls /sys/class/scsi_host/* >/dev/null 2>&1; then
  i=0
  while [ $i -lt 50 ] && ! ls /sys/class/scsi_device/* >/dev/null 2>&1; do usleep 20000; i=$((i + 1)); done
  i=0
  while [ $i -lt 25 ] && ls /sys/class/scsi_device/*/device/block >/dev/null 2>&1 && ! ls /dev/sr* >/dev/null 2>&1; do usleep 20000; i=$((i + 1)); done
fi

mnt=/run/fd-seed
mkdir -p $mnt
for dev in /dev/sr* /dev/vd[b-z]; do
  [ -b "$dev" ] || continue
  mount -t iso9660 -o ro "$dev" $mnt 2>/dev/null || continue
  if [ -f $mnt/meta-data ] || [ -f $mnt/user-data ]; then
    say "FD-SEED source=$dev"
    if [ -f $mnt/meta-data ]; then
      # NoCloud meta-data is YAML; the two keys that matter are flat "key: value" lines.
      sed -n 's/^\(local-hostname\|hostname\|instance-id\):[[:space:]]*\(.*\)$/\1 \2/p' $mnt/meta-data |
        while read -r k v; do
          v=${v%\"}; v=${v#\"}; v=${v%\'}; v=${v#\'}
          [ "$k" = local-hostname ] && k=hostname
          say "FD-SEED $k=$v"
          [ "$k" = hostname ] && hostname "$v"
        done
    fi
    if [ -f $mnt/user-data ]; then
      head -n 100 $mnt/user-data | tr -d '\r' | while IFS= read -r line || [ -n "$line" ]; do say "FD-SEED user-data=$line"; done
    fi
  fi
  if [ -f $mnt/ovf-env.xml ]; then
    say "FD-OVFENV source=$dev"
    # <Property oe:key="k" oe:value="v"/>, any namespace prefix or attribute order; one a line.
    {
      tr -d '\r\n' <$mnt/ovf-env.xml
      echo
    } | sed 's/<\([A-Za-z0-9_]*:\)\{0,1\}Property[[:space:]]/\n&/g' |
      awk '/^<([A-Za-z0-9_]*:)?Property[ \t]/ {
        if (!match($0, /[: \t]key="[^"]*"/)) next
        k = substr($0, RSTART + 6, RLENGTH - 7)
        if (!match($0, /[: \t]value="[^"]*"/)) next
        print k "=" substr($0, RSTART + 8, RLENGTH - 9)
      }' |
      sed 's/&lt;/</g; s/&gt;/>/g; s/&quot;/"/g; s/&apos;/'"'"'/g; s/&amp;/\&/g' |
      while IFS= read -r kv; do say "FD-OVFENV $kv"; done
  fi
  umount $mnt
done
