package network

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"
)

// benchFleet is 100 machines, 10,000 Services of 10 pods each (1,000 pods
// a machine), 100 NetworkPolicies and 100 Ingresses of 10 rules.
func benchFleet(b *testing.B) Input {
	const machines, services, perService = 100, 10000, 10
	var docs []string
	docs = append(docs, "apiVersion: berth.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c\nspec:\n"+
		"  podCIDR: 10.128.0.0/9\n  serviceCIDR: 10.96.0.0/12\n  podCIDRMaskSize: 20\n"+
		"  loadBalancer: {pools: [10.0.0.0/16]}\n  ingress: {machineSelector: {matchLabels: {edge: \"true\"}}}\n")
	for i := range machines {
		edge := ""
		if i < 3 {
			edge = "  labels: {edge: \"true\"}\n"
		}
		docs = append(docs, fmt.Sprintf("apiVersion: berth.dev/v1alpha1\nkind: Machine\nmetadata:\n  name: m%03d\n%sspec:\n  address: 10.0.%d.%d\n", i, edge, i/200, 1+i%200))
	}
	for i := range 10 {
		docs = append(docs, fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns%d\n", i))
	}
	for i := range services {
		typ := "ClusterIP"
		switch i % 10 {
		case 1:
			typ = "NodePort"
		case 2:
			if i%100 == 2 {
				typ = "LoadBalancer"
			}
		}
		docs = append(docs, fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: s%05d\n  namespace: ns%d\nspec:\n  type: %s\n  selector: {app: s%05d}\n"+
			"  ports:\n    - {name: http, port: 80, targetPort: http}\n    - {name: metrics, port: 9100}\n", i, i%10, typ, i))
	}
	for i := range 100 {
		docs = append(docs, fmt.Sprintf("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p%d\n  namespace: ns%d\nspec:\n"+
			"  podSelector: {matchLabels: {app: s%05d}}\n  ingress: [{from: [{podSelector: {matchLabels: {tier: front}}}], ports: [{port: http}]}]\n", i, i%10, i*10+i%10))
		var rules []string
		for j := range 10 {
			s := i*10 + j
			if s%10 != i%10 {
				continue
			}
			rules = append(rules, fmt.Sprintf("{host: h%d.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: s%05d, port: {name: http}}}}]}}", s, s))
		}
		docs = append(docs, fmt.Sprintf("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: i%d\n  namespace: ns%d\nspec:\n  ingressClassName: berth\n  rules: [%s]\n", i, i%10, strings.Join(rules, ", ")))
	}
	d := load(b, fstest.MapFS{"repo.yaml": {Data: []byte(strings.Join(docs, "\n---\n"))}})
	first := compute(b, Input{Desired: d})
	in := Input{Desired: d, Memory: first.Memory}
	n := 0
	for i := range machines {
		name := fmt.Sprintf("m%03d", i)
		in.Machines = append(in.Machines, Machine{Name: name, Reachable: true, Healthy: true})
	}
	for s := range services {
		for j := range perService {
			m := &in.Machines[n%machines]
			labels := map[string]string{"app": fmt.Sprintf("s%05d", s)}
			if j == 0 {
				labels["tier"] = "front"
			}
			ip := addrAdd(first.Networks[m.Name].PodCIDR.Addr(), uint64(2+len(m.Pods)))
			p := running(fmt.Sprintf("ns%d", s%10), fmt.Sprintf("s%05d-%d", s, j), ip.String(), labels, port("http", 8080))
			p.Status.Ready = j != 9
			m.Pods = append(m.Pods, p)
			n++
		}
	}
	return in
}

// BenchmarkCompute is one pass over the whole fleet.
func BenchmarkCompute(b *testing.B) {
	in := benchFleet(b)
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	var res *Result
	for b.Loop() {
		res = compute(b, in)
	}
	b.StopTimer()
	// CPU time (GC included) says what a pass costs when the machine is
	// shared and wall time is not.
	b.ReportMetric(float64((cpuTime(b)-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
	eps := 0
	for _, s := range res.Networks["m000"].Services {
		eps += len(s.Endpoints)
	}
	if eps != 100000 {
		b.Fatalf("%d endpoints, want 100000", eps)
	}
	if len(res.Diagnostics) > 0 {
		b.Fatalf("diagnostics: %v", res.Diagnostics[0])
	}
	b.ReportMetric(float64(eps), "endpoints")
}

// cpuTime is the CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDigests is the digest of every machine's Network of the
// benchmark fleet, which the controller compares with what each agent
// reports on every pass.
func BenchmarkDigests(b *testing.B) {
	res := compute(b, benchFleet(b))
	b.ReportAllocs()
	for b.Loop() {
		_ = res.Digests()
	}
}
