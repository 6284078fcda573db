package schedule

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// hostPort is a port a pod binds on its machine.
type hostPort struct {
	ip       string // "" is every address
	protocol corev1.Protocol
	port     int32
}

// conflicts says whether two host ports cannot be bound at once: same port
// and protocol, and the same address or either one on every address.
func (a hostPort) conflicts(b hostPort) bool {
	return a.port == b.port && a.protocol == b.protocol && (a.ip == "" || b.ip == "" || a.ip == b.ip)
}

func (a hostPort) String() string {
	ip := a.ip
	if ip == "" {
		ip = "0.0.0.0"
	}
	return string(a.protocol) + " " + ip + ":" + strconv.Itoa(int(a.port))
}

// podHostPorts lists the host ports of a pod's containers and sidecars,
// with Kubernetes' defaults: TCP, every address, and with hostNetwork the
// container port as the host port.
func podHostPorts(spec *corev1.PodSpec) []hostPort {
	var out []hostPort
	collect := func(c *corev1.Container) {
		for _, p := range c.Ports {
			hp := hostPort{ip: p.HostIP, protocol: p.Protocol, port: p.HostPort}
			if hp.port == 0 && spec.HostNetwork {
				hp.port = p.ContainerPort
			}
			if hp.port <= 0 {
				continue
			}
			if hp.protocol == "" {
				hp.protocol = corev1.ProtocolTCP
			}
			if hp.ip == "0.0.0.0" || hp.ip == "::" {
				hp.ip = ""
			}
			out = append(out, hp)
		}
	}
	for i := range spec.InitContainers {
		if isSidecar(&spec.InitContainers[i]) {
			collect(&spec.InitContainers[i])
		}
	}
	for i := range spec.Containers {
		collect(&spec.Containers[i])
	}
	return out
}

// portsFilter is NodePorts: none of the pod's host ports may be taken on
// the machine. The reason names the first port in conflict.
func portsFilter(c *cycle, m *machineState) []string {
	for _, want := range c.pod.ports {
		for _, used := range m.ports {
			if want.conflicts(used) {
				return []string{"host port " + want.String() + " in use"}
			}
		}
	}
	return nil
}
