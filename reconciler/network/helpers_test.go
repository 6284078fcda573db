package network

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"

	goldenfile "berth.dev/berth/internal/golden"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/render"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// load renders a repository and fails on any error diagnostic.
func load(t testing.TB, fsys fs.FS) *render.Desired {
	t.Helper()
	d, err := render.Load(context.Background(), fsys, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range d.Diagnostics {
		if x.Severity == render.SeverityError {
			t.Fatalf("repository does not load cleanly: %s", x)
		}
	}
	return d
}

// compute runs Compute and fails on an error.
func compute(t testing.TB, in Input) *Result {
	t.Helper()
	res, err := Compute(in)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// podIP is the n-th address of a machine's pod CIDR.
func podIP(t testing.TB, res *Result, machine string, n uint64) string {
	t.Helper()
	c := res.Networks[machine].PodCIDR
	if !c.IsValid() {
		t.Fatalf("machine %s has no pod CIDR", machine)
	}
	return addrAdd(c.Addr(), n).String()
}

// running is a ready pod with labels and named container ports.
func running(ns, name, ip string, labels map[string]string, ports ...corev1.ContainerPort) Pod {
	return Pod{
		Status: api.PodStatus{Namespace: ns, Name: name, UID: name + "-uid", Labels: labels, Phase: corev1.PodRunning, Ready: true, PodIP: ip},
		Spec: &api.Pod{Namespace: ns, Name: name, UID: name + "-uid", Labels: labels, Spec: api.PodSpec{
			Containers: []corev1.Container{{Name: "main", Ports: ports}},
		}},
	}
}

func port(name string, n int32) corev1.ContainerPort {
	return corev1.ContainerPort{Name: name, ContainerPort: n, Protocol: corev1.ProtocolTCP}
}

// dump is a Result as indented JSON, with what every machine shares
// (Services, Pods, DNS, Ingress) shown once, after checking it is shared.
func dump(t testing.TB, res *Result) string {
	t.Helper()
	type out struct {
		Machines    map[string]api.Network `json:"machines"`
		Services    []api.Service          `json:"services"`
		Pods        []api.PodAddress       `json:"pods"`
		DNS         api.ClusterDNS         `json:"dns"`
		Ingress     *ingressView           `json:"ingress"`
		Memory      Memory                 `json:"memory"`
		Diagnostics []string               `json:"diagnostics"`
	}
	o := out{Machines: map[string]api.Network{}, Memory: res.Memory}
	first := true
	for name, n := range res.Networks {
		if first {
			o.Services, o.Pods, o.DNS = n.Services, n.Pods, n.DNS
			first = false
		}
		if !reflect.DeepEqual(n.Services, o.Services) || !reflect.DeepEqual(n.Pods, o.Pods) || !reflect.DeepEqual(n.DNS, o.DNS) {
			t.Errorf("machine %s does not share the Services, Pods or DNS of the others", name)
		}
		if n.Ingress != nil {
			if o.Ingress != nil && !reflect.DeepEqual(n.Ingress, &o.Ingress.Ingress) {
				t.Errorf("machine %s serves another Ingress than the other ingress machines", name)
			}
			o.Ingress = redacted(n.Ingress)
		}
		c := *n
		c.Services, c.Pods, c.DNS = nil, nil, api.ClusterDNS{}
		if c.Ingress != nil {
			c.Ingress = &api.Ingress{} // shown once
		}
		o.Machines[name] = c
	}
	for _, d := range res.Diagnostics {
		o.Diagnostics = append(o.Diagnostics, d.String())
	}
	b, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

// golden compares got with testdata/name, rewriting it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	goldenfile.Check(t, name, got, *update)
}

// ingressView is an Ingress whose certificates and keys say only how long
// they are: golden files hold no key, not even a test one.
type ingressView struct {
	api.Ingress
	TLS []tlsView `json:"tls,omitempty"`
}

type tlsView struct {
	Source string   `json:"source"`
	Hosts  []string `json:"hosts,omitempty"`
	Cert   string   `json:"cert"`
	Key    string   `json:"key"`
}

func redacted(in *api.Ingress) *ingressView {
	out := &ingressView{Ingress: *in}
	for _, t := range in.TLS {
		out.TLS = append(out.TLS, tlsView{t.Source, t.Hosts, fmt.Sprintf("[%d bytes]", len(t.Cert)), fmt.Sprintf("[%d bytes]", len(t.Key))})
	}
	return out
}
