package network

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func policyYAML(ns, name, spec string) string {
	return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\nspec:\n" + spec
}

// TestPolicies checks resolution case by case; each case's pods run on
// m1 (a, b in default) and m2 (c in default, d in kube-system).
func TestPolicies(t *testing.T) {
	pods := func() []Machine {
		ms := healthy("m1", "m2")
		a := running("default", "a", "198.18.64.2", map[string]string{"app": "web"}, port("http", 8080))
		b := running("default", "b", "198.18.64.3", map[string]string{"app": "web"}, port("http", 9090))
		c := running("default", "c", "198.18.65.2", map[string]string{"app": "db"}, port("pg", 5432))
		hn := running("default", "hn", "198.18.0.11", map[string]string{"app": "web"}, port("http", 80))
		hn.Spec.Spec.HostNetwork = true
		d := running("kube-system", "d", "198.18.65.3", map[string]string{"k8s-app": "kube-dns"}, port("dns", 53))
		ms[0].Pods = []Pod{a, b, hn}
		ms[1].Pods = []Pod{c, d}
		return ms
	}
	for _, tc := range []struct {
		name, spec string
		// want is the JSON of the policies of m1 and m2.
		m1, m2 string
	}{{
		name: "default deny selects everything, ingress only",
		spec: "  podSelector: {}\n",
		m1:   `[{"namespace":"default","name":"p","pods":["198.18.64.2","198.18.64.3"],"ingress":true}]`,
		m2:   `[{"namespace":"default","name":"p","pods":["198.18.65.2"],"ingress":true}]`,
	}, {
		name: "egress rules imply the Egress type",
		spec: "  podSelector: {matchLabels: {app: db}}\n  egress: [{}]\n",
		m1:   `null`,
		m2:   `[{"namespace":"default","name":"p","pods":["198.18.65.2"],"ingress":true,"egress":true,"egressRules":[{}]}]`,
	}, {
		name: "a named ingress port splits the pods by what it means on each",
		spec: "  podSelector: {matchLabels: {app: web}}\n  ingress:\n    - ports: [{port: http}, {port: 7000, endPort: 7010, protocol: UDP}]\n",
		m1: `[{"namespace":"default","name":"p","pods":["198.18.64.2"],"ingress":true,"ingressRules":[{"ports":[{"protocol":"TCP","port":8080},{"protocol":"UDP","port":7000,"endPort":7010}]}]},` +
			`{"namespace":"default","name":"p","pods":["198.18.64.3"],"ingress":true,"ingressRules":[{"ports":[{"protocol":"TCP","port":9090},{"protocol":"UDP","port":7000,"endPort":7010}]}]}]`,
		m2: `null`,
	}, {
		name: "a rule whose named port no selected pod has allows nothing",
		spec: "  podSelector: {matchLabels: {app: db}}\n  ingress:\n    - ports: [{port: http}]\n",
		m2:   `[{"namespace":"default","name":"p","pods":["198.18.65.2"],"ingress":true}]`,
		m1:   `null`,
	}, {
		name: "peers that select nothing allow nothing; namespaceSelector by the implied name label",
		spec: "  podSelector: {matchLabels: {app: db}}\n  ingress:\n    - from: [{podSelector: {matchLabels: {app: none}}}]\n    - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}]\n",
		m2:   `[{"namespace":"default","name":"p","pods":["198.18.65.2"],"ingress":true,"ingressRules":[{"peers":[{"ips":["198.18.65.3"]}]}]}]`,
		m1:   `null`,
	}, {
		name: "an empty namespaceSelector is every namespace; with a podSelector, both must match",
		spec: "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Egress]\n  egress:\n    - to: [{namespaceSelector: {}, podSelector: {matchLabels: {k8s-app: kube-dns}}}]\n    - to: [{namespaceSelector: {}}]\n",
		m2: `[{"namespace":"default","name":"p","pods":["198.18.65.2"],"egress":true,"egressRules":[` +
			`{"peers":[{"ips":["198.18.65.3"]}]},{"peers":[{"ips":["198.18.64.2","198.18.64.3","198.18.65.2","198.18.65.3"]}]}]}]`,
		m1: `null`,
	}, {
		name: "a named egress port splits the rule by destination",
		spec: "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Egress]\n  egress:\n    - to: [{podSelector: {matchLabels: {app: web}}}]\n      ports: [{port: http}, {port: 443}]\n",
		m2: `[{"namespace":"default","name":"p","pods":["198.18.65.2"],"egress":true,"egressRules":[` +
			`{"peers":[{"ips":["198.18.64.2","198.18.64.3"]}],"ports":[{"protocol":"TCP","port":443}]},` +
			`{"peers":[{"ips":["198.18.64.2"]}],"ports":[{"protocol":"TCP","port":8080}]},` +
			`{"peers":[{"ips":["198.18.64.3"]}],"ports":[{"protocol":"TCP","port":9090}]}]}]`,
		m1: `null`,
	}, {
		name: "a named egress port to an ipBlock is every number the name has",
		spec: "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Egress]\n  egress:\n    - to: [{ipBlock: {cidr: 198.18.64.0/18, except: [198.18.64.3/32]}}]\n      ports: [{port: http}]\n",
		m2: `[{"namespace":"default","name":"p","pods":["198.18.65.2"],"egress":true,"egressRules":[` +
			`{"peers":[{"block":"198.18.64.0/18","except":["198.18.64.3/32"]}],"ports":[{"protocol":"TCP","port":80},{"protocol":"TCP","port":8080},{"protocol":"TCP","port":9090}]}]}]`,
		m1: `null`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			d := repo(t, labCluster, 2, policyYAML("default", "p", tc.spec))
			res := compute(t, Input{Desired: d, Machines: pods()})
			for m, want := range map[string]string{"m1": tc.m1, "m2": tc.m2} {
				b, _ := json.Marshal(res.Networks[m].Policies)
				if string(b) != want {
					t.Errorf("%s:\ngot  %s\nwant %s", m, b, want)
				}
			}
		})
	}
}

func TestPolicyProtocolDefault(t *testing.T) {
	// A UDP named port does not match a TCP container port of that name.
	d := repo(t, labCluster, 1, policyYAML("default", "p", "  podSelector: {}\n  ingress:\n    - ports: [{port: dns, protocol: UDP}]\n"))
	ms := healthy("m1")
	ms[0].Pods = []Pod{running("default", "a", "198.18.64.2", nil, port("dns", 53))}
	res := compute(t, Input{Desired: d, Machines: ms})
	if rules := res.Networks["m1"].Policies[0].IngressRules; rules != nil {
		t.Errorf("got %+v", rules)
	}
	ms[0].Pods[0].Spec.Spec.Containers[0].Ports[0].Protocol = corev1.ProtocolUDP
	res = compute(t, Input{Desired: d, Machines: ms})
	if rules := res.Networks["m1"].Policies[0].IngressRules; len(rules) != 1 || rules[0].Ports[0].Port != 53 {
		t.Errorf("got %+v", rules)
	}
}
