package schedule

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestPortsFilter(t *testing.T) {
	port := func(ip string, proto corev1.Protocol, hp int32) func(*Pod) {
		return func(p *Pod) {
			p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: 8080, HostPort: hp, HostIP: ip, Protocol: proto})
		}
	}
	tests := []struct {
		name         string
		used, wanted func(*Pod)
		want         string
	}{
		{"same port, default protocol and address", port("", "", 80), port("", "", 80), "host port TCP 0.0.0.0:80 in use"},
		{"other port", port("", "", 80), port("", "", 81), ""},
		{"other protocol", port("", corev1.ProtocolTCP, 53), port("", corev1.ProtocolUDP, 53), ""},
		{"different specific addresses", port("198.18.0.1", "", 80), port("198.18.0.2", "", 80), ""},
		{"a wildcard takes every address", port("0.0.0.0", "", 80), port("198.18.0.2", "", 80), "host port TCP 198.18.0.2:80 in use"},
		{"the wildcard collides with a specific address", port("198.18.0.1", "", 80), port("", "", 80), "host port TCP 0.0.0.0:80 in use"},
		{"container ports without hostPort bind nothing", port("", "", 0), port("", "", 0), ""},
		{"with hostNetwork the container port is bound", func(p *Pod) {
			p.Spec.HostNetwork = true
			port("", "", 0)(p)
		}, port("", "", 8080), "host port TCP 0.0.0.0:8080 in use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := run(t, []Machine{machine("m")}, []BoundPod{bound("b", "m", tt.used)}, pod("p", tt.wanted))
			if got := filterResults(c, portsFilter)["m"]; got != tt.want {
				t.Errorf("reasons = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSidecarHostPorts(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	spec := &corev1.PodSpec{
		InitContainers: []corev1.Container{
			{Ports: []corev1.ContainerPort{{HostPort: 9000}}, RestartPolicy: &always},
			{Ports: []corev1.ContainerPort{{HostPort: 9001}}}, // finished before the pod runs
		},
		Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{HostPort: 80, Protocol: corev1.ProtocolUDP}}}},
	}
	got := podHostPorts(spec)
	want := []hostPort{{protocol: corev1.ProtocolTCP, port: 9000}, {protocol: corev1.ProtocolUDP, port: 80}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("host ports = %v, want %v", got, want)
	}
}
