package policy

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	psapi "k8s.io/pod-security-admission/api"
	psa "k8s.io/pod-security-admission/policy"

	"berth.dev/berth/render"
	"berth.dev/berth/render/api/v1alpha1"
)

// RulePodSecurity is the rule name of Pod Security Standards violations.
const RulePodSecurity = "pod-security"

// evaluator holds Kubernetes' Pod Security checks. Building it inflates
// every check for every version, so it is done once, on first use.
var evaluator = sync.OnceValues(func() (psa.Evaluator, error) {
	return psa.NewEvaluator(psa.DefaultChecks(), nil)
})

// psMode is one of the three ways a namespace applies a level.
type psMode struct {
	name   string // enforce, warn, audit
	action v1alpha1.Action
}

var psModes = [...]psMode{
	{"enforce", v1alpha1.ActionDeny},
	{"warn", v1alpha1.ActionWarn},
	{"audit", v1alpha1.ActionWarn},
}

// psLevel is a level and version a namespace applies, with the labels
// that ask for it.
type psLevel struct {
	lv     psapi.LevelVersion
	labels []string
}

// nsPolicy is a namespace's Pod Security policy. A namespace without
// labels, like the implicit default and kube-system, has none: every level
// is privileged.
type nsPolicy struct {
	name    string
	enforce *psLevel
	// warn holds the warn and audit levels; two labels asking for the
	// same level share one entry, and so one violation.
	warn []*psLevel
}

const psLabelPrefix = "pod-security.kubernetes.io/"

// namespace reads the Pod Security labels of a Namespace object. Invalid
// values are denied at the label; a mode whose level is invalid is not
// evaluated (the Namespace is denied anyway, and guessing the intended
// level would only add noise), and an invalid version means latest, as in
// Kubernetes.
func (e *evaluation) namespace(o *render.Object) {
	ns, ok := o.Obj.(*corev1.Namespace)
	if !ok {
		return
	}
	p := &nsPolicy{name: o.Name}
	for _, m := range psModes {
		levelLabel := psLabelPrefix + m.name
		versionLabel := levelLabel + "-version"
		version := psapi.LatestVersion()
		if s, ok := ns.Labels[versionLabel]; ok {
			v, err := psapi.ParseVersion(s)
			if err != nil {
				e.badLabel(o, versionLabel, "version", s, err)
			} else {
				version = v
			}
		}
		s, ok := ns.Labels[levelLabel]
		if !ok {
			continue
		}
		level, err := psapi.ParseLevel(s)
		if err != nil {
			e.badLabel(o, levelLabel, "level", s, err)
			continue
		}
		if level == psapi.LevelPrivileged {
			continue
		}
		lv := psapi.LevelVersion{Level: level, Version: version}
		if m.action == v1alpha1.ActionDeny {
			p.enforce = &psLevel{lv: lv, labels: []string{levelLabel}}
			continue
		}
		merged := false
		for _, w := range p.warn {
			if w.lv == lv {
				w.labels = append(w.labels, levelLabel)
				merged = true
				break
			}
		}
		if !merged {
			p.warn = append(p.warn, &psLevel{lv: lv, labels: []string{levelLabel}})
		}
	}
	for k := range ns.Labels {
		if name, ok := strings.CutPrefix(k, psLabelPrefix); ok && !knownPSLabel(name) {
			e.add(o, RulePodSecurity, v1alpha1.ActionWarn, "metadata.labels["+k+"]",
				fmt.Sprintf("unknown Pod Security label %s: Kubernetes and berth ignore it; the labels are %senforce, warn and audit, each with a -version", k, psLabelPrefix))
		}
	}
	if p.enforce != nil || len(p.warn) > 0 {
		if e.namespaces == nil {
			e.namespaces = map[string]*nsPolicy{}
		}
		e.namespaces[o.Name] = p
	}
}

func knownPSLabel(name string) bool {
	for _, m := range psModes {
		if name == m.name || name == m.name+"-version" {
			return true
		}
	}
	return false
}

func (e *evaluation) badLabel(o *render.Object, label, what, value string, err error) {
	e.add(o, RulePodSecurity, v1alpha1.ActionDeny, "metadata.labels["+label+"]",
		fmt.Sprintf("invalid Pod Security %s %q in label %s: %v", what, value, label, err))
}

// podSecurity evaluates one pod template against its namespace's levels,
// the way Kubernetes' admission does: enforce first, and warn and audit
// only when enforce lets the pod through. Where Kubernetes admits a
// Deployment and then refuses each pod it creates, berth refuses the
// Deployment: the same outcome, told before anything runs. Audit has no
// audit log to go to, so it warns.
func (e *evaluation) podSecurity(o *render.Object, meta *metav1.ObjectMeta, spec *corev1.PodSpec, path string) {
	p := e.namespaces[o.Namespace]
	if p == nil {
		return
	}
	ev, err := evaluator()
	if err != nil {
		// The upstream checks are compiled in; they cannot fail to
		// register except through a bug there, which every pod would hit.
		e.add(o, RulePodSecurity, v1alpha1.ActionDeny, path, "cannot evaluate Pod Security Standards: "+err.Error())
		return
	}
	var passed *psapi.LevelVersion
	if l := p.enforce; l != nil {
		res := psa.AggregateCheckResults(ev.EvaluatePod(l.lv, meta, spec))
		if !res.Allowed {
			verb := "would violate"
			if o.Kind == "Pod" {
				verb = "violates" // what the API server says rejecting a Pod
			}
			e.podSecurityViolation(o, v1alpha1.ActionDeny, verb, l, p.name, &res, spec, path)
			return
		}
		passed = &l.lv
	}
	for _, l := range p.warn {
		if passed != nil && *passed == l.lv {
			continue
		}
		res := psa.AggregateCheckResults(ev.EvaluatePod(l.lv, meta, spec))
		if !res.Allowed {
			e.podSecurityViolation(o, v1alpha1.ActionWarn, "would violate", l, p.name, &res, spec, path)
		}
	}
}

func (e *evaluation) podSecurityViolation(o *render.Object, action v1alpha1.Action, verb string, l *psLevel, ns string, res *psa.AggregateCheckResult, spec *corev1.PodSpec, path string) {
	field := ""
	for i, reason := range res.ForbiddenReasons {
		fs := reasonFields(reason, spec, path)
		if len(fs) == 0 {
			fs = []string{path}
		}
		for j, f := range fs {
			if i == 0 && j == 0 {
				field = f
			} else {
				field = commonAncestor(field, f)
			}
		}
	}
	if !within(field, path) {
		field = path
	}
	word := "label"
	if len(l.labels) > 1 {
		word = "labels"
	}
	msg := fmt.Sprintf("%s PodSecurity %q: %s; set by %s %s of Namespace %s",
		verb, l.lv.String(), res.ForbiddenDetail(), word, strings.Join(l.labels, " and "), ns)
	e.add(o, RulePodSecurity, action, field, msg)
}

// reasonFields maps a failed Pod Security check, by the reason Kubernetes
// gives, to the fields of the pod spec at path that make it fail, so that
// the violation points at them. It returns nil when it cannot tell; the
// message, which is Kubernetes' own, is the authority either way.
func reasonFields(reason string, spec *corev1.PodSpec, path string) []string {
	var fs []string
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	sc := func(c *corev1.Container) *corev1.SecurityContext {
		if c.SecurityContext == nil {
			return &corev1.SecurityContext{}
		}
		return c.SecurityContext
	}
	switch reason {
	case "privileged":
		eachContainer(spec, path, func(c ctr) {
			if v := sc(c.Container).Privileged; v != nil && *v {
				fs = append(fs, c.field(".securityContext.privileged"))
			}
		})
	case "host namespaces":
		for _, h := range []struct {
			on    bool
			field string
		}{{spec.HostNetwork, "hostNetwork"}, {spec.HostPID, "hostPID"}, {spec.HostIPC, "hostIPC"}} {
			if h.on {
				fs = append(fs, path+"."+h.field)
			}
		}
	case "hostPath volumes", "restricted volume types":
		for i, v := range spec.Volumes {
			switch {
			case v.HostPath != nil:
				fs = append(fs, path+".volumes["+strconv.Itoa(i)+"].hostPath")
			case reason == "restricted volume types" && !restrictedVolumeOK(&v.VolumeSource):
				fs = append(fs, path+".volumes["+strconv.Itoa(i)+"]")
			}
		}
	case "hostPort":
		eachContainer(spec, path, func(c ctr) {
			for j, port := range c.Ports {
				if port.HostPort != 0 {
					fs = append(fs, c.field(".ports["+strconv.Itoa(j)+"].hostPort"))
				}
			}
		})
	case "non-default capabilities":
		eachContainer(spec, path, func(c ctr) {
			if caps := sc(c.Container).Capabilities; caps != nil {
				for _, a := range caps.Add {
					if !baselineCapabilities[a] {
						fs = append(fs, c.field(".securityContext.capabilities.add"))
						break
					}
				}
			}
		})
	case "unrestricted capabilities":
		eachContainer(spec, path, func(c ctr) {
			caps := sc(c.Container).Capabilities
			if caps == nil {
				fs = append(fs, c.field(".securityContext.capabilities"))
				return
			}
			if !dropsAll(caps) {
				fs = append(fs, c.field(".securityContext.capabilities.drop"))
			}
			for _, a := range caps.Add {
				if a != "NET_BIND_SERVICE" {
					fs = append(fs, c.field(".securityContext.capabilities.add"))
					break
				}
			}
		})
	case "allowPrivilegeEscalation != false":
		eachContainer(spec, path, func(c ctr) {
			if v := sc(c.Container).AllowPrivilegeEscalation; v == nil || *v {
				fs = append(fs, c.field(".securityContext.allowPrivilegeEscalation"))
			}
		})
	case "runAsNonRoot != true":
		podSet := psc.RunAsNonRoot != nil
		if podSet && !*psc.RunAsNonRoot {
			fs = append(fs, path+".securityContext.runAsNonRoot")
		}
		eachContainer(spec, path, func(c ctr) {
			switch v := sc(c.Container).RunAsNonRoot; {
			case v != nil && !*v:
				fs = append(fs, c.field(".securityContext.runAsNonRoot"))
			case v == nil && !podSet:
				fs = append(fs, path+".securityContext.runAsNonRoot")
			}
		})
	case "runAsUser=0":
		if v := psc.RunAsUser; v != nil && *v == 0 {
			fs = append(fs, path+".securityContext.runAsUser")
		}
		eachContainer(spec, path, func(c ctr) {
			if v := sc(c.Container).RunAsUser; v != nil && *v == 0 {
				fs = append(fs, c.field(".securityContext.runAsUser"))
			}
		})
	case "seccompProfile":
		podOK := psc.SeccompProfile != nil && psc.SeccompProfile.Type != corev1.SeccompProfileTypeUnconfined
		if psc.SeccompProfile != nil && !podOK {
			fs = append(fs, path+".securityContext.seccompProfile.type")
		}
		eachContainer(spec, path, func(c ctr) {
			switch sp := sc(c.Container).SeccompProfile; {
			case sp != nil && sp.Type == corev1.SeccompProfileTypeUnconfined:
				fs = append(fs, c.field(".securityContext.seccompProfile.type"))
			case sp == nil && !podOK:
				fs = append(fs, path+".securityContext.seccompProfile")
			}
		})
	case "procMount":
		eachContainer(spec, path, func(c ctr) {
			if v := sc(c.Container).ProcMount; v != nil && *v != corev1.DefaultProcMount {
				fs = append(fs, c.field(".securityContext.procMount"))
			}
		})
	case "seLinuxOptions":
		if psc.SELinuxOptions != nil {
			fs = append(fs, path+".securityContext.seLinuxOptions")
		}
		eachContainer(spec, path, func(c ctr) {
			if sc(c.Container).SELinuxOptions != nil {
				fs = append(fs, c.field(".securityContext.seLinuxOptions"))
			}
		})
	case "forbidden sysctls":
		fs = append(fs, path+".securityContext.sysctls")
	case "forbidden AppArmor profile", "forbidden AppArmor profiles":
		if psc.AppArmorProfile != nil {
			fs = append(fs, path+".securityContext.appArmorProfile")
		}
		eachContainer(spec, path, func(c ctr) {
			if sc(c.Container).AppArmorProfile != nil {
				fs = append(fs, c.field(".securityContext.appArmorProfile"))
			}
		})
	case "hostProcess":
		if w := psc.WindowsOptions; w != nil && w.HostProcess != nil && *w.HostProcess {
			fs = append(fs, path+".securityContext.windowsOptions.hostProcess")
		}
		eachContainer(spec, path, func(c ctr) {
			if w := sc(c.Container).WindowsOptions; w != nil && w.HostProcess != nil && *w.HostProcess {
				fs = append(fs, c.field(".securityContext.windowsOptions.hostProcess"))
			}
		})
	case "probe or lifecycle host":
		eachContainer(spec, path, func(c ctr) {
			if setsHost(c.Container) {
				fs = append(fs, c.field(""))
			}
		})
	}
	return fs
}

// baselineCapabilities are the capabilities the baseline level lets a
// container add.
var baselineCapabilities = map[corev1.Capability]bool{
	"AUDIT_WRITE": true, "CHOWN": true, "DAC_OVERRIDE": true, "FOWNER": true,
	"FSETID": true, "KILL": true, "MKNOD": true, "NET_BIND_SERVICE": true,
	"SETFCAP": true, "SETGID": true, "SETPCAP": true, "SETUID": true,
	"SYS_CHROOT": true,
}

// restrictedVolumeOK reports whether the restricted level allows a volume
// type.
func restrictedVolumeOK(v *corev1.VolumeSource) bool {
	return v.ConfigMap != nil || v.CSI != nil || v.DownwardAPI != nil || v.EmptyDir != nil ||
		v.Ephemeral != nil || v.PersistentVolumeClaim != nil || v.Projected != nil ||
		v.Secret != nil || v.Image != nil
}

// setsHost reports whether a container's probes or lifecycle hooks name a
// host other than the pod.
func setsHost(c *corev1.Container) bool {
	var hs []*corev1.ProbeHandler
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		if p != nil {
			hs = append(hs, &p.ProbeHandler)
		}
	}
	for _, h := range hs {
		if h.HTTPGet != nil && h.HTTPGet.Host != "" || h.TCPSocket != nil && h.TCPSocket.Host != "" {
			return true
		}
	}
	if l := c.Lifecycle; l != nil {
		for _, h := range []*corev1.LifecycleHandler{l.PostStart, l.PreStop} {
			if h != nil && (h.HTTPGet != nil && h.HTTPGet.Host != "" || h.TCPSocket != nil && h.TCPSocket.Host != "") {
				return true
			}
		}
	}
	return false
}

func dropsAll(caps *corev1.Capabilities) bool {
	for _, d := range caps.Drop {
		if d == "ALL" {
			return true
		}
	}
	return false
}

// containerKind tells the three lists of containers of a pod spec apart.
type containerKind int

const (
	initContainer containerKind = iota
	appContainer
	ephemeralContainer
)

// ctr is one container of a pod spec, with what it takes to name it and
// its fields. Names and paths are built only when a violation needs them,
// so that checking a compliant container allocates nothing.
type ctr struct {
	*corev1.Container
	kind containerKind
	spec string // the pod spec's path
	i    int
}

var containerLists = [...]string{initContainer: ".initContainers[", appContainer: ".containers[", ephemeralContainer: ".ephemeralContainers["}

// field returns the path of the container's field sub ("" for the
// container itself, else starting with a dot).
func (c ctr) field(sub string) string {
	return c.spec + containerLists[c.kind] + strconv.Itoa(c.i) + "]" + sub
}

// says returns a sentence about the container: `container "app"` followed
// by a space and rest.
func (c ctr) says(rest string) string {
	if c.kind == initContainer {
		return `init container "` + c.Name + `" ` + rest
	}
	return `container "` + c.Name + `" ` + rest
}

// eachContainer calls f for every container of spec, init containers
// first, then app containers, then ephemeral containers.
func eachContainer(spec *corev1.PodSpec, path string, f func(c ctr)) {
	for i := range spec.InitContainers {
		f(ctr{&spec.InitContainers[i], initContainer, path, i})
	}
	for i := range spec.Containers {
		f(ctr{&spec.Containers[i], appContainer, path, i})
	}
	for i := range spec.EphemeralContainers {
		f(ctr{(*corev1.Container)(&spec.EphemeralContainers[i].EphemeralContainerCommon), ephemeralContainer, path, i})
	}
}
