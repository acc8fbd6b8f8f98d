// The last hour of a VM's CPU, memory, disk and network, from its host's sample ring
// (GET /vms/{id}/metrics, every 10 s), drawn with uPlot.
import { useEffect, useRef } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { fmtBytes } from '../api';
import { useVmMetrics } from '../queries';
import { ErrorBox } from '../components/ui';
import type { Vm, VmSample } from '../types';

const CHARTS: { title: string; series: { label: string; pick: (s: VmSample) => number | null }[]; bytes?: boolean }[] =
  [
    { title: 'CPU (% of one core)', series: [{ label: 'CPU %', pick: (s) => s.cpuPercent }] },
    { title: 'Memory (resident)', bytes: true, series: [{ label: 'RSS', pick: (s) => s.memoryRssBytes }] },
    {
      title: 'Disk (per second)',
      bytes: true,
      series: [
        { label: 'read', pick: (s) => s.diskReadBps },
        { label: 'write', pick: (s) => s.diskWriteBps },
      ],
    },
    {
      title: 'Network (per second)',
      bytes: true,
      series: [
        { label: 'received', pick: (s) => s.netRxBps },
        { label: 'sent', pick: (s) => s.netTxBps },
      ],
    },
  ];
const COLORS = ['#2563eb', '#db2777'];

function Chart({ title, samples, def }: { title: string; samples: VmSample[]; def: (typeof CHARTS)[number] }) {
  const el = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const node = el.current;
    if (!node) return;
    const data: uPlot.AlignedData = [samples.map((s) => s.t / 1000), ...def.series.map((x) => samples.map(x.pick))];
    const plot = new uPlot(
      {
        width: Math.max(260, node.clientWidth),
        height: 160,
        series: [{}, ...def.series.map((x, i) => ({ label: x.label, stroke: COLORS[i], width: 2, spanGaps: false }))],
        axes: [{}, { size: 70, values: (_u, ticks) => ticks.map((v) => (def.bytes ? fmtBytes(v) : String(v))) }],
      },
      data,
      node,
    );
    const ro = new ResizeObserver(() => plot.setSize({ width: Math.max(260, node.clientWidth), height: 160 }));
    ro.observe(node);
    return () => {
      ro.disconnect();
      plot.destroy();
    };
  }, [samples, def]);
  return (
    <figure className="chart">
      <figcaption>{title}</figcaption>
      <div ref={el} role="img" aria-label={`${title}, last hour`} />
    </figure>
  );
}

export function Graphs({ vm }: { vm: Vm }) {
  const m = useVmMetrics(vm);
  const samples = m.data?.samples ?? [];
  return (
    <div className="graphs">
      <ErrorBox error={m.error} />
      {samples.length === 0 && <p>No samples yet: the host samples its running VMs every 10 s.</p>}
      {samples.length > 0 && CHARTS.map((c) => <Chart key={c.title} title={c.title} samples={samples} def={c} />)}
    </div>
  );
}
