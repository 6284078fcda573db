package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/render"
	"berth.dev/berth/render/api/v1alpha1"
)

// RuleChecklist is the rule name of problems with the Cluster's
// spec.policy.checklist itself.
const RuleChecklist = "checklist"

// The production checklist's rules, by the name a Cluster's
// spec.policy.checklist uses.
const (
	// A Deployment or StatefulSet runs 2 replicas or more (an HPA's
	// minReplicas, when one scales it).
	RuleReplicas = "replicas"
	// Every container requests cpu and memory and limits memory.
	RuleResources = "resources"
	// Every app container of a long-running pod (not a Job's, nor a
	// Pod's that restarts Never or OnFailure) has readiness and liveness
	// probes.
	RuleProbes = "probes"
	// Every container runs with runAsNonRoot: true or a non-zero
	// runAsUser, its own or the pod's.
	RuleRunAsNonRoot = "runAsNonRoot"
	// Every container sets readOnlyRootFilesystem: true.
	RuleReadOnlyRootFilesystem = "readOnlyRootFilesystem"
	// Every container sets allowPrivilegeEscalation: false.
	RuleAllowPrivilegeEscalation = "allowPrivilegeEscalation"
	// Every container's capabilities.drop holds ALL.
	RuleDropAllCapabilities = "dropAllCapabilities"
	// Every image is pinned by digest: name@sha256:<64 hex digits>.
	RuleImageDigest = "imageDigest"
	// Pods run as a ServiceAccount of their own, not the default one.
	RuleServiceAccount = "serviceAccount"
)

type ruleID int

const (
	ruleReplicas ruleID = iota
	ruleResources
	ruleProbes
	ruleRunAsNonRoot
	ruleReadOnlyRootFilesystem
	ruleAllowPrivilegeEscalation
	ruleDropAllCapabilities
	ruleImageDigest
	ruleServiceAccount
	numRules
)

var ruleNames = [numRules]string{
	RuleReplicas, RuleResources, RuleProbes, RuleRunAsNonRoot, RuleReadOnlyRootFilesystem,
	RuleAllowPrivilegeEscalation, RuleDropAllCapabilities, RuleImageDigest, RuleServiceAccount,
}

// ChecklistRules returns the names of the production checklist's rules.
func ChecklistRules() []string { return slices.Clone(ruleNames[:]) }

// configure sets each checklist rule's action from the Cluster's
// spec.policy.checklist, and denies the names that are no rule. An action
// other than off, warn or deny (which render reports) leaves the default,
// warn.
func (e *evaluation) configure(cluster *render.Object, checklist map[string]v1alpha1.Action) {
	for i := range e.actions {
		e.actions[i] = v1alpha1.ActionWarn
	}
	var unknown []string
	for name, a := range checklist {
		i := slices.Index(ruleNames[:], name)
		if i < 0 {
			unknown = append(unknown, name)
			continue
		}
		switch a {
		case v1alpha1.ActionOff, v1alpha1.ActionWarn, v1alpha1.ActionDeny:
			e.actions[i] = a
		}
	}
	for _, name := range unknown {
		msg := fmt.Sprintf("unknown checklist rule %q", name)
		for _, r := range ruleNames {
			if strings.EqualFold(r, name) {
				msg += fmt.Sprintf(" (did you mean %s?)", r)
			}
		}
		sorted := slices.Sorted(slices.Values(ruleNames[:]))
		msg += "; the rules are " + strings.Join(sorted, ", ")
		field := "spec.policy.checklist[" + name + "]"
		v := Violation{Rule: RuleChecklist, Action: v1alpha1.ActionDeny, Field: field, Message: msg}
		if cluster != nil {
			v.Object = cluster.Key()
			v.Pos = cluster.FieldPos(field)
		}
		e.out = append(e.out, v)
	}
}

// autoscaler records which workload an HPA scales: its minReplicas, not
// the workload's replicas, then decides how few pods run.
func (e *evaluation) autoscaler(o *render.Object) {
	h, ok := o.Obj.(*autoscalingv2.HorizontalPodAutoscaler)
	if !ok {
		return
	}
	if e.scaled == nil {
		e.scaled = map[render.Key]bool{}
	}
	e.scaled[scaleTarget(o, h)] = true
}

// scaleTarget is the key of the object an HPA scales.
func scaleTarget(o *render.Object, h *autoscalingv2.HorizontalPodAutoscaler) render.Key {
	ref := h.Spec.ScaleTargetRef
	group, _, ok := strings.Cut(ref.APIVersion, "/")
	if !ok {
		group = ""
	}
	return render.Key{Group: group, Kind: ref.Kind, Namespace: o.Namespace, Name: ref.Name}
}

// minReplicas checks that an HPA scaling a Deployment or StatefulSet keeps
// at least two pods.
func (e *evaluation) minReplicas(o *render.Object) {
	h, ok := o.Obj.(*autoscalingv2.HorizontalPodAutoscaler)
	if !ok {
		return
	}
	target := scaleTarget(o, h)
	if target.Group != "apps" || target.Kind != "Deployment" && target.Kind != "StatefulSet" {
		return
	}
	low := int32(1) // the default
	if m := h.Spec.MinReplicas; m != nil {
		low = *m
	}
	if low < 2 {
		e.flag(o, ruleReplicas, "spec.minReplicas", fmt.Sprintf("scales %s down to %d %s: set spec.minReplicas to 2 or more, so that losing a machine or rolling out does not stop the service", target, low, plural(int(low), "replica", "replicas")))
	}
}

func (e *evaluation) on(r ruleID) bool { return e.actions[r] != v1alpha1.ActionOff }

func (e *evaluation) flag(o *render.Object, r ruleID, field, msg string) {
	e.add(o, ruleNames[r], e.actions[r], field, msg)
}

// checklist applies the production checklist to one object running pods,
// whose pod spec is at path.
func (e *evaluation) checklist(o *render.Object, spec *corev1.PodSpec, path string) {
	if e.on(ruleReplicas) {
		e.replicas(o)
	}
	if e.on(ruleServiceAccount) {
		name, field := spec.ServiceAccountName, ".serviceAccountName"
		if name == "" && spec.DeprecatedServiceAccount != "" {
			name, field = spec.DeprecatedServiceAccount, ".serviceAccount"
		}
		if name == "" || name == "default" {
			who := "its pods run"
			if o.Kind == "Pod" {
				who = "the pod runs"
			}
			e.flag(o, ruleServiceAccount, path+field, who+" as the namespace's default ServiceAccount: set serviceAccountName to a ServiceAccount of its own, with only the permissions it needs")
		}
	}
	// Probes are for pods that keep running: not for a Job's, nor for a
	// bare Pod that is meant to finish.
	longRunning := o.Kind != "Job" && o.Kind != "CronJob" && spec.RestartPolicy == corev1.RestartPolicyAlways
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	eachContainer(spec, path, func(c ctr) {
		if c.kind == ephemeralContainer {
			return // debugging containers, added by hand for a while
		}
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		if e.on(ruleResources) {
			e.resources(o, c)
		}
		if e.on(ruleProbes) && c.kind == appContainer && longRunning {
			e.probes(o, c)
		}
		if e.on(ruleRunAsNonRoot) {
			e.runAsNonRoot(o, psc, sc, c)
		}
		if e.on(ruleReadOnlyRootFilesystem) && (sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem) {
			e.flag(o, ruleReadOnlyRootFilesystem, c.field(".securityContext.readOnlyRootFilesystem"),
				c.says("can write to its root filesystem: set securityContext.readOnlyRootFilesystem: true, and mount an emptyDir where it must write"))
		}
		if e.on(ruleAllowPrivilegeEscalation) && (sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation) {
			msg := "does not set securityContext.allowPrivilegeEscalation: false, so a setuid binary could gain privileges"
			if sc.AllowPrivilegeEscalation != nil {
				msg = "sets allowPrivilegeEscalation: true instead of securityContext.allowPrivilegeEscalation: false, so a setuid binary could gain privileges"
			}
			e.flag(o, ruleAllowPrivilegeEscalation, c.field(".securityContext.allowPrivilegeEscalation"), c.says(msg))
		}
		if e.on(ruleDropAllCapabilities) && (sc.Capabilities == nil || !dropsAll(sc.Capabilities)) {
			e.flag(o, ruleDropAllCapabilities, c.field(".securityContext.capabilities.drop"),
				c.says(`keeps the runtime's default capabilities: set securityContext.capabilities.drop: ["ALL"] and add back only what it needs`))
		}
		if e.on(ruleImageDigest) {
			if problem := digestProblem(c.Image); problem != "" {
				e.flag(o, ruleImageDigest, c.field(".image"),
					"image "+strconv.Quote(c.Image)+" of "+c.says(problem+": pin it as name@sha256:<64 hex digits> so every machine runs the same bytes"))
			}
		}
	})
}

// replicas checks that a Deployment or StatefulSet runs at least two pods,
// unless an HPA scales it.
func (e *evaluation) replicas(o *render.Object) {
	var n *int32
	switch v := o.Obj.(type) {
	case *appsv1.Deployment:
		n = v.Spec.Replicas
	case *appsv1.StatefulSet:
		n = v.Spec.Replicas
	default:
		return
	}
	if e.scaled != nil && e.scaled[o.Key()] {
		return // minReplicas checks it
	}
	cur := int32(1) // render defaults it; a nil here is an unrendered object
	if n != nil {
		cur = *n
	}
	if cur < 2 {
		e.flag(o, ruleReplicas, "spec.replicas", fmt.Sprintf("runs %d %s: set spec.replicas to 2 or more, so that losing a machine or rolling out does not stop the service", cur, plural(int(cur), "replica", "replicas")))
	}
}

// probes checks that an app container of a long-running pod has a
// readiness and a liveness probe.
func (e *evaluation) probes(o *render.Object, c ctr) {
	const (
		readiness = "readinessProbe, so that it receives traffic only when ready"
		liveness  = "livenessProbe, so that it is restarted when it hangs"
	)
	switch {
	case c.ReadinessProbe == nil && c.LivenessProbe == nil:
		e.flag(o, ruleProbes, c.field(""), c.says("has no readinessProbe and no livenessProbe: set "+readiness+", and "+liveness))
	case c.ReadinessProbe == nil:
		e.flag(o, ruleProbes, c.field(".readinessProbe"), c.says("has no readinessProbe: set "+readiness))
	case c.LivenessProbe == nil:
		e.flag(o, ruleProbes, c.field(".livenessProbe"), c.says("has no livenessProbe: set "+liveness))
	}
}

// resources checks that a container requests cpu and memory and limits
// memory. A limit without a request counts as the request, as it does in
// Kubernetes.
func (e *evaluation) resources(o *render.Object, c ctr) {
	r := &c.Resources
	has := func(l corev1.ResourceList, name corev1.ResourceName) bool {
		_, ok := l[name]
		return ok
	}
	cpu := has(r.Requests, corev1.ResourceCPU) || has(r.Limits, corev1.ResourceCPU)
	limit := has(r.Limits, corev1.ResourceMemory)
	mem := limit || has(r.Requests, corev1.ResourceMemory)
	if cpu && mem && limit {
		return
	}
	var missing []string
	if !cpu {
		missing = append(missing, "requests.cpu")
	}
	if !mem {
		missing = append(missing, "requests.memory")
	}
	if !limit {
		missing = append(missing, "limits.memory")
	}
	field := "resources." + missing[0]
	for _, m := range missing[1:] {
		field = commonAncestor(field, "resources."+m)
	}
	for i, m := range missing {
		missing[i] = "resources." + m
	}
	e.flag(o, ruleResources, c.field("."+field),
		c.says("does not set "+joinAnd(missing)+": requests let berth place the pod on a machine with room for it, and a memory limit keeps it from starving its neighbours"))
}

// runAsNonRoot checks that a container cannot run as root: runAsNonRoot
// true, or a non-zero runAsUser, in the container or else the pod.
func (e *evaluation) runAsNonRoot(o *render.Object, psc *corev1.PodSecurityContext, sc *corev1.SecurityContext, c ctr) {
	user, nonRoot := sc.RunAsUser, sc.RunAsNonRoot
	if user == nil {
		user = psc.RunAsUser
	}
	if nonRoot == nil {
		nonRoot = psc.RunAsNonRoot
	}
	switch {
	case user != nil && *user == 0:
		field := c.field(".securityContext.runAsUser")
		if sc.RunAsUser == nil {
			field = c.spec + ".securityContext.runAsUser"
		}
		e.flag(o, ruleRunAsNonRoot, field, c.says("runs as root (runAsUser: 0): set a non-zero securityContext.runAsUser and runAsNonRoot: true"))
	case user != nil:
		// A non-zero uid is not root, whatever the image says.
	case nonRoot == nil:
		e.flag(o, ruleRunAsNonRoot, c.field(".securityContext.runAsNonRoot"),
			c.says("may run as root: set securityContext.runAsNonRoot: true (or a non-zero runAsUser), in the container or the pod"))
	case !*nonRoot:
		field := c.field(".securityContext.runAsNonRoot")
		if sc.RunAsNonRoot == nil {
			field = c.spec + ".securityContext.runAsNonRoot"
		}
		e.flag(o, ruleRunAsNonRoot, field, c.says("may run as root (runAsNonRoot: false): set securityContext.runAsNonRoot: true (or a non-zero runAsUser)"))
	}
}

// digestProblem says why an image reference is not pinned by a sha256
// digest, or returns "".
func digestProblem(image string) string {
	_, digest, ok := strings.Cut(image, "@")
	if !ok {
		return "is not pinned by digest"
	}
	hex, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hex) != 64 || strings.IndexFunc(hex, func(r rune) bool { return (r < '0' || r > '9') && (r < 'a' || r > 'f') }) >= 0 {
		return fmt.Sprintf("has a malformed digest %q", digest)
	}
	return ""
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// joinAnd joins "a", "b" and "c" as "a, b and c".
func joinAnd(s []string) string {
	if len(s) <= 1 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}
