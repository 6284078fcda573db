package agentclient_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/agentclient"
	"berth.dev/berth/nodes/api"
)

// BenchmarkPodsRoundTrip measures one GET /v1/pods through the client,
// HTTP over a real unix socket and the server, on a kept-alive
// connection: the cost the controller pays per status poll, less SSH. It
// reports the median and 99th percentile of one call, for an empty node
// (the transport alone) and for one with 30 pods (JSON included).
func BenchmarkPodsRoundTrip(b *testing.B) {
	for _, n := range []int{0, 30} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) { benchmarkPods(b, n) })
	}
}

func benchmarkPods(b *testing.B, n int) {
	fake := &fakeBackend{pods: []api.PodStatus{}}
	for i := range n {
		fake.pods = append(fake.pods, api.PodStatus{
			Namespace: "default", Name: fmt.Sprintf("web-%d", i), UID: "uid", Hash: "hash",
			Phase: corev1.PodRunning, Ready: true, PodIP: "198.18.64.10", StartedAt: time.Now(),
			ContainerStatuses: []api.ContainerStatus{{Name: "web", Image: "berth/echo:1", Ready: true, Started: true,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}},
		})
	}
	c, _ := startAgent(b, fake, agentclient.Options{})
	ctx := context.Background()
	if _, err := c.Pods(ctx); err != nil { // dial once, outside the figures
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		pods, err := c.Pods(ctx)
		lat = append(lat, time.Since(start))
		if err != nil || len(pods) != n {
			b.Fatal(len(pods), err)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
