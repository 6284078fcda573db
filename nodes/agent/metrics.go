package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"berth.dev/berth/nodes/api"
)

// Metrics are the agent's Prometheus metrics. The HTTP layer registers
// Collectors() with its registry and serves them on /metrics.
type Metrics struct {
	restarts      *prometheus.CounterVec
	probes        *prometheus.CounterVec
	pulls         *prometheus.CounterVec
	syncDuration  prometheus.Histogram
	runtimeErrors prometheus.Counter
	podsDesc      *prometheus.Desc

	pods func() map[api.PodPhase]int
}

func newMetrics() *Metrics {
	return &Metrics{
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "berth", Subsystem: "agent", Name: "container_restarts_total",
			Help: "Container restarts (a new instance after an exit or a failed probe), by pod and container.",
		}, []string{"pod", "container"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "berth", Subsystem: "agent", Name: "probe_results_total",
			Help: "Probe attempts by probe type (Startup, Liveness, Readiness) and result (success, failure).",
		}, []string{"probe_type", "result"}),
		pulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "berth", Subsystem: "agent", Name: "image_pulls_total",
			Help: "Image pulls by result.",
		}, []string{"result"}),
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "berth", Subsystem: "agent", Name: "pod_sync_duration_seconds",
			Help:    "How long one pod sync (compare and act) took.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}),
		runtimeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "berth", Subsystem: "agent", Name: "runtime_errors_total",
			Help: "Failed container runtime calls (containerd unavailable, ...).",
		}),
		podsDesc: prometheus.NewDesc("berth_agent_pods", "Pods on this node by phase.", []string{"phase"}, nil),
	}
}

// Collectors returns every collector, for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.restarts, m.probes, m.pulls, m.syncDuration, m.runtimeErrors, podsCollector{m}}
}

// forgetPod drops a removed pod's series.
func (m *Metrics) forgetPod(key string) {
	m.restarts.DeletePartialMatch(prometheus.Labels{"pod": key})
}

// podsCollector counts pods by phase when scraped, from the same status
// computation Pods() uses.
type podsCollector struct{ m *Metrics }

func (c podsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.podsDesc }

func (c podsCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[api.PodPhase]int{}
	if c.m.pods != nil {
		counts = c.m.pods()
	}
	for _, phase := range []api.PodPhase{"Pending", "Running", "Succeeded", "Failed"} {
		ch <- prometheus.MustNewConstMetric(c.m.podsDesc, prometheus.GaugeValue, float64(counts[phase]), string(phase))
	}
}
