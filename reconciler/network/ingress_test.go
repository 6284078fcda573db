package network

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"testing/fstest"

	"berth.dev/berth/render"
)

func ingressYAML(name, meta, spec string) string {
	return "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: " + name + "\n" + meta + "spec:\n" + spec
}

const backendWeb = "    service: {name: web, port: {number: 80}}\n"

func TestIngressClasses(t *testing.T) {
	docs := []string{
		svcYAML("web", "  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n"),
		ingressYAML("a-none", "", "  defaultBackend:\n"+backendWeb),
		ingressYAML("b-berth", "", "  ingressClassName: berth\n  rules: [{host: b.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]\n"),
		ingressYAML("c-annotated", "  annotations: {kubernetes.io/ingress.class: berth}\n", "  rules: [{host: c.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]\n"),
		ingressYAML("d-other", "", "  ingressClassName: other\n  defaultBackend:\n"+backendWeb),
	}
	ms := healthy("m1", "m2")
	ms[1].Pods = []Pod{running("default", "w", "198.18.65.2", map[string]string{"app": "web"})}
	for _, tc := range []struct {
		name, cluster string
		want          map[string]string // machine: sources served, "nil" for none
	}{
		{"no ingress machines", "", map[string]string{"m1": "nil", "m2": "nil"}},
		{"every machine, berth class", "  ingress: {machineSelector: {}}\n", map[string]string{"m1": "b-berth c-annotated", "m2": "b-berth c-annotated"}},
		{"one machine, default class too", "  ingress: {machineSelector: {matchLabels: {n: \"2\"}}, default: true}\n", map[string]string{"m1": "nil", "m2": "b-berth c-annotated +default"}},
		{"another class name", "  ingress: {machineSelector: {}, className: other}\n", map[string]string{"m1": "+default", "m2": "+default"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := repo(t, labCluster+tc.cluster, 2, docs...)
			res := compute(t, Input{Desired: d, Machines: ms})
			for m, want := range tc.want {
				ing := res.Networks[m].Ingress
				got := "nil"
				if ing != nil {
					var s []string
					for _, r := range ing.Rules {
						s = append(s, strings.TrimPrefix(r.Source, "default/"))
					}
					if ing.DefaultBackend != nil {
						s = append(s, "+default")
					}
					got = strings.Join(s, " ")
				}
				if got != want {
					t.Errorf("%s serves %q, want %q", m, got, want)
				}
				if ing != nil && ing.DefaultBackend != nil {
					if b, _ := json.Marshal(ing.DefaultBackend.Endpoints); string(b) != `["198.18.65.2:8080"]` {
						t.Errorf("default backend endpoints %s", b)
					}
				}
			}
		})
	}
}

// TestIngressProblems covers what validation lets through but the
// ingress machines cannot serve as written.
func TestIngressProblems(t *testing.T) {
	doc := strings.Join([]string{
		"apiVersion: berth.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c\nspec:\n" + labCluster + "  ingress: {machineSelector: {}}\n",
		"apiVersion: berth.dev/v1alpha1\nkind: Machine\nmetadata:\n  name: m1\nspec:\n  address: 198.18.0.11\n",
		svcYAML("web", "  selector: {app: web}\n  ports: [{name: http, port: 80}]\n"),
		"apiVersion: v1\nkind: Secret\nmetadata:\n  name: half\ntype: kubernetes.io/tls\ndata:\n  tls.crt: Y2VydA==\n  tls.key: \"\"\n",
		ingressYAML("x", "  annotations: {kubernetes.io/ingress.class: berth}\n", "  tls:\n    - secretName: half\n    - hosts: [x.example.com]\n    - secretName: gone\n  defaultBackend:\n"+backendWeb),
		ingressYAML("y", "  annotations: {kubernetes.io/ingress.class: berth}\n", "  defaultBackend:\n    service: {name: web, port: {name: http}}\n"),
	}, "\n---\n")
	d, err := render.Load(context.Background(), fstest.MapFS{"repo.yaml": {Data: []byte(doc)}}, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res := compute(t, Input{Desired: d, Machines: healthy("m1")})
	ing := res.Networks["m1"].Ingress
	if ing == nil || ing.DefaultBackend == nil || ing.DefaultBackend.Service != "default/web:80" || len(ing.TLS) != 0 {
		t.Fatalf("ingress %+v", ing)
	}
	ds := diagnostics(res)
	for _, want := range []string{
		"repo.yaml:45:7: error: Ingress default/x: spec.tls[0].secretName: Secret half lacks tls.crt or tls.key: these hosts are served over HTTP only",
		"warning: Ingress default/x: spec.tls[1]: no secretName",
		"error: Ingress default/x: spec.tls[2].secretName: Secret gone not found: these hosts are served over HTTP only",
		"warning: Ingress default/y: spec.defaultBackend: defaultBackend is not used: Ingress default/x's is",
	} {
		if !strings.Contains(ds, want) {
			t.Errorf("no %q in:\n%s", want, ds)
		}
	}
	if strings.Contains(ds, "Y2VydA") || strings.Contains(ds, "cert") && !strings.Contains(ds, "certificate") {
		t.Errorf("a diagnostic shows Secret data:\n%s", ds)
	}
}
