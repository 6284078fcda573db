package agent

import (
	"fmt"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"berth.dev/berth/nodes/api"
)

// validateDesired checks a whole desired set; the error wraps
// api.ErrInvalid and lists every problem found.
func validateDesired(d api.DesiredPods) error {
	var problems []string
	keys, uids := map[string]bool{}, map[string]bool{}
	for i := range d.Pods {
		p := &d.Pods[i]
		where := fmt.Sprintf("pods[%d]", i)
		if p.Namespace != "" && p.Name != "" {
			where = "pod " + p.Key()
		}
		add := func(format string, args ...any) {
			problems = append(problems, where+": "+fmt.Sprintf(format, args...))
		}
		if p.Namespace == "" {
			add("namespace is empty")
		} else if errs := validation.IsDNS1123Label(p.Namespace); len(errs) > 0 {
			add("namespace %q: %s", p.Namespace, errs[0])
		}
		if p.Name == "" {
			add("name is empty")
		} else if errs := validation.IsDNS1123Subdomain(p.Name); len(errs) > 0 {
			add("name %q: %s", p.Name, errs[0])
		}
		if p.UID == "" {
			add("uid is empty")
		} else if strings.ContainsAny(p.UID, "/_ \t\n") || p.UID == "." || p.UID == ".." {
			add("uid %q: must not contain '/', '_' or spaces", p.UID)
		} else if uids[p.UID] {
			add("uid %q appears twice", p.UID)
		}
		uids[p.UID] = true
		if p.Namespace != "" && p.Name != "" {
			if keys[p.Key()] {
				add("appears twice")
			}
			keys[p.Key()] = true
		}
		for _, msg := range validateSpec(&p.Spec) {
			add("%s", msg)
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", api.ErrInvalid, strings.Join(problems, "; "))
}

func validateSpec(s *api.PodSpec) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	switch s.RestartPolicy {
	case "", corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever:
	default:
		add("restartPolicy %q: must be Always, OnFailure or Never", s.RestartPolicy)
	}
	switch s.DNSPolicy {
	case "", corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet, corev1.DNSDefault:
	case corev1.DNSNone:
		if s.DNSConfig == nil || len(s.DNSConfig.Nameservers) == 0 {
			add("dnsPolicy None needs dnsConfig with at least one nameserver")
		}
	default:
		add("dnsPolicy %q: must be ClusterFirst, ClusterFirstWithHostNet, Default or None", s.DNSPolicy)
	}
	if g := s.TerminationGracePeriodSeconds; g != nil && *g < 0 {
		add("terminationGracePeriodSeconds %d: must not be negative", *g)
	}
	if d := s.ActiveDeadlineSeconds; d != nil && *d <= 0 {
		add("activeDeadlineSeconds %d: must be positive", *d)
	}

	volumes := map[string]bool{}
	for i := range s.Volumes {
		v := &s.Volumes[i]
		where := fmt.Sprintf("volume %q", v.Name)
		if errs := validation.IsDNS1123Label(v.Name); len(errs) > 0 {
			add("volumes[%d] name %q: %s", i, v.Name, errs[0])
		} else if volumes[v.Name] {
			add("%s appears twice", where)
		}
		volumes[v.Name] = true
		n := 0
		if v.EmptyDir != nil {
			n++
		}
		if v.HostPath != nil {
			n++
			if !path.IsAbs(v.HostPath.Path) {
				add("%s: hostPath %q is not absolute", where, v.HostPath.Path)
			}
			if t := v.HostPath.Type; t != nil && !validHostPathType(*t) {
				add("%s: hostPath type %q is not known", where, *t)
			}
		}
		if v.Files != nil {
			n++
			paths := map[string]bool{}
			for _, f := range v.Files.Files {
				if msg := checkRelPath(f.Path); msg != "" {
					add("%s: file %q: %s", where, f.Path, msg)
					continue
				} else if paths[f.Path] {
					add("%s: file %q appears twice", where, f.Path)
				}
				paths[f.Path] = true
				if f.Mode < 0 || f.Mode > 0o777 {
					add("%s: file %q: mode %#o out of range", where, f.Path, f.Mode)
				}
			}
			for p := range paths {
				for dir := path.Dir(p); dir != "." && dir != "/"; dir = path.Dir(dir) {
					if paths[dir] {
						add("%s: file %q is below file %q", where, p, dir)
					}
				}
			}
		}
		if n != 1 {
			add("%s: exactly one of emptyDir, hostPath or files must be set", where)
		}
	}

	if len(s.Containers) == 0 {
		add("no containers")
	}
	names := map[string]bool{}
	check := func(kind string, c *corev1.Container, init bool) {
		where := fmt.Sprintf("%s %q", kind, c.Name)
		if errs := validation.IsDNS1123Label(c.Name); len(errs) > 0 {
			add("%s: name: %s", where, errs[0])
		} else if names[c.Name] {
			add("%s: name appears twice", where)
		}
		names[c.Name] = true
		if strings.TrimSpace(c.Image) == "" {
			add("%s: image is empty", where)
		}
		switch c.ImagePullPolicy {
		case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		default:
			add("%s: imagePullPolicy %q: must be Always, IfNotPresent or Never", where, c.ImagePullPolicy)
		}
		if c.RestartPolicy != nil {
			if !init || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				add("%s: restartPolicy may only be Always, on an init container (a sidecar)", where)
			}
		}
		ports := map[string]bool{}
		for _, p := range c.Ports {
			if p.Name != "" {
				if errs := validation.IsValidPortName(p.Name); len(errs) > 0 {
					add("%s: port name %q: %s", where, p.Name, errs[0])
				}
				ports[p.Name] = true
			}
			if errs := validation.IsValidPortNum(int(p.ContainerPort)); len(errs) > 0 {
				add("%s: containerPort %d: %s", where, p.ContainerPort, errs[0])
			}
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				add("%s: volumeMount %q refers to no volume", where, m.Name)
			}
			if !path.IsAbs(m.MountPath) {
				add("%s: mountPath %q is not absolute", where, m.MountPath)
			}
			if m.SubPath != "" {
				if msg := checkRelPath(m.SubPath); msg != "" {
					add("%s: subPath %q: %s", where, m.SubPath, msg)
				}
			}
		}
		sidecar := init && isSidecar(c)
		for _, pr := range []struct {
			name string
			p    *corev1.Probe
			ok   bool
		}{
			{"livenessProbe", c.LivenessProbe, !init || sidecar},
			{"readinessProbe", c.ReadinessProbe, !init || sidecar},
			{"startupProbe", c.StartupProbe, !init || sidecar},
		} {
			if pr.p == nil {
				continue
			}
			if !pr.ok {
				add("%s: %s is not allowed on an init container", where, pr.name)
				continue
			}
			for _, msg := range validateProbe(pr.p, ports, pr.name == "livenessProbe" || pr.name == "startupProbe") {
				add("%s: %s: %s", where, pr.name, msg)
			}
		}
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
			h := c.Lifecycle.PreStop
			n := 0
			if h.Exec != nil {
				n++
				if len(h.Exec.Command) == 0 {
					add("%s: preStop: exec command is empty", where)
				}
			}
			if h.HTTPGet != nil {
				n++
				if msg := checkPort(h.HTTPGet.Port, ports); msg != "" {
					add("%s: preStop: %s", where, msg)
				}
			}
			if h.Sleep != nil {
				n++
				if h.Sleep.Seconds < 0 {
					add("%s: preStop: sleep seconds must not be negative", where)
				}
			}
			if h.TCPSocket != nil {
				add("%s: preStop: tcpSocket is not supported", where)
			}
			if n != 1 && h.TCPSocket == nil {
				add("%s: preStop: exactly one of exec, httpGet or sleep must be set", where)
			}
		}
	}
	for i := range s.InitContainers {
		check("init container", &s.InitContainers[i], true)
	}
	for i := range s.Containers {
		check("container", &s.Containers[i], false)
	}
	return problems
}

func validateProbe(p *corev1.Probe, ports map[string]bool, needsOneSuccess bool) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	n := 0
	if p.Exec != nil {
		n++
		if len(p.Exec.Command) == 0 {
			add("exec command is empty")
		}
	}
	if p.HTTPGet != nil {
		n++
		if msg := checkPort(p.HTTPGet.Port, ports); msg != "" {
			add("httpGet: %s", msg)
		}
		switch p.HTTPGet.Scheme {
		case "", corev1.URISchemeHTTP, corev1.URISchemeHTTPS:
		default:
			add("httpGet: scheme %q: must be HTTP or HTTPS", p.HTTPGet.Scheme)
		}
	}
	if p.TCPSocket != nil {
		n++
		if msg := checkPort(p.TCPSocket.Port, ports); msg != "" {
			add("tcpSocket: %s", msg)
		}
	}
	if p.GRPC != nil {
		n++
		if errs := validation.IsValidPortNum(int(p.GRPC.Port)); len(errs) > 0 {
			add("grpc: port %d: %s", p.GRPC.Port, errs[0])
		}
	}
	if n != 1 {
		add("exactly one of exec, httpGet, tcpSocket or grpc must be set")
	}
	for _, f := range []struct {
		name string
		v    int32
	}{
		{"initialDelaySeconds", p.InitialDelaySeconds},
		{"periodSeconds", p.PeriodSeconds},
		{"timeoutSeconds", p.TimeoutSeconds},
		{"successThreshold", p.SuccessThreshold},
		{"failureThreshold", p.FailureThreshold},
	} {
		if f.v < 0 {
			add("%s %d: must not be negative", f.name, f.v)
		}
	}
	if needsOneSuccess && p.SuccessThreshold > 1 {
		add("successThreshold %d: must be 1 for liveness and startup probes", p.SuccessThreshold)
	}
	return problems
}

// checkPort accepts a port number or the name of one of the container's
// ports.
func checkPort(port intstr.IntOrString, names map[string]bool) string {
	if port.Type == intstr.String {
		if !names[port.StrVal] {
			return fmt.Sprintf("port %q names none of the container's ports", port.StrVal)
		}
		return ""
	}
	if errs := validation.IsValidPortNum(port.IntValue()); len(errs) > 0 {
		return fmt.Sprintf("port %d: %s", port.IntValue(), errs[0])
	}
	return ""
}

// checkRelPath accepts a relative, slash-separated, clean path without
// ".." components (nor a leading "..", which the ..data swap reserves).
func checkRelPath(p string) string {
	switch {
	case p == "":
		return "path is empty"
	case strings.HasPrefix(p, "/"):
		return "path is absolute"
	case strings.HasPrefix(p, ".."):
		return "path must not start with \"..\""
	case slices.Contains(strings.Split(p, "/"), ".."):
		return "path contains \"..\""
	case strings.ContainsRune(p, 0):
		return "path contains a NUL byte"
	case path.Clean(p) != p:
		return "path is not clean"
	}
	return ""
}

func validHostPathType(t corev1.HostPathType) bool {
	switch t {
	case corev1.HostPathUnset, corev1.HostPathDirectoryOrCreate, corev1.HostPathDirectory,
		corev1.HostPathFileOrCreate, corev1.HostPathFile, corev1.HostPathSocket,
		corev1.HostPathCharDev, corev1.HostPathBlockDev:
		return true
	}
	return false
}

// isSidecar: an init container with restartPolicy Always runs beside the
// app containers.
func isSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}
