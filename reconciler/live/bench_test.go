package live

import (
	"fmt"
	"strings"
	"testing"
	"testing/fstest"
)

// benchRepo is 10 machines and 30 Deployments of 10 replicas (300 pods),
// each with requests, probes and a ConfigMap as env and files.
func benchRepo() fstest.MapFS {
	var b strings.Builder
	for i := range 10 {
		fmt.Fprintf(&b, "---\napiVersion: berth.dev/v1alpha1\nkind: Machine\nmetadata: {name: m%02d, labels: {zone: z%d}}\nspec: {address: 198.18.1.%d}\n", i, i%3, 10+i)
	}
	fsys := fstest.MapFS{"machines.yaml": {Data: []byte(b.String())}}
	for i := range 30 {
		fsys[fmt.Sprintf("app%02d.yaml", i)] = &fstest.MapFile{Data: []byte(fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: app%02d}
data: {level: info, app.conf: "listen 8080\n"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app%02d}
spec:
  replicas: 10
  selector: {matchLabels: {app: app%02d}}
  template:
    metadata: {labels: {app: app%02d}}
    spec:
      containers:
      - name: app
        image: 198.18.0.1:5000/app:%d
        env: [{name: LEVEL, valueFrom: {configMapKeyRef: {name: app%02d, key: level}}}]
        resources: {requests: {cpu: 10m, memory: 16Mi}}
        readinessProbe: {httpGet: {path: /healthz, port: 8080}}
        volumeMounts: [{name: conf, mountPath: /etc/app}]
      volumes: [{name: conf, configMap: {name: app%02d}}]
`, i, i, i, i, i, i, i))}
	}
	return fsys
}

// BenchmarkPass300 is one pass over 300 pods on 10 machines: "first"
// places and resolves all of them on an empty fleet, "converged" checks a
// fleet that runs them all (the steady state of `berth serve`).
func BenchmarkPass300(b *testing.B) {
	d := load(b, benchRepo())
	s := newFleetSim(b, d)
	first := Input{Desired: d, Observed: s.observe(), Now: s.now}
	p := s.converge(20, nil)
	if n := len(p.Pods); n != 300 {
		b.Fatalf("%d pods", n)
	}
	conv := Input{Desired: d, Observed: s.observe(), Memory: s.memory, Now: s.now}
	for _, c := range []struct {
		name string
		in   Input
	}{{"first", first}, {"converged", conv}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Plan(c.in, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
