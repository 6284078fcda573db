package render

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/validate/content"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"berth.dev/berth/render/api/v1alpha1"
)

// validate checks each object and the references between them, and
// returns every problem found. References are looked up in the objects of
// the repository, always within the referring object's namespace; a
// reference marked optional that does not resolve is a warning, any other
// an error.
//
// Each object is checked once, with map lookups for what it refers to and
// for what must be unique across objects (NodePorts, cluster IPs, machine
// addresses), so validation is linear in the number of objects.
func validate(d *Desired) Diagnostics {
	v := newValidator(d)
	for _, o := range d.Objects {
		v.object(o)
	}
	v.machineCIDRs()
	return v.diags
}

// Namespaces that exist in every cluster without being declared.
var implicitNamespaces = map[string]bool{"default": true, "kube-system": true}

// The ServiceAccount every namespace has.
const defaultServiceAccount = "default"

// ClusterRoles every Kubernetes cluster has, which bindings may name
// without declaring them.
var implicitClusterRoles = map[string]bool{"cluster-admin": true, "admin": true, "edit": true, "view": true}

type validator struct {
	d     *Desired
	diags Diagnostics
	// The Cluster's ranges, when they are valid.
	podCIDR, serviceCIDR netip.Prefix
	// Uniqueness across objects: the first place each value was seen.
	nodePorts  map[int32]nodePortUse
	clusterIPs map[netip.Addr]place
	addresses  map[string]place
	podCIDRs   []cidrUse
}

// place is a field of an object, for messages that name two places.
type place struct {
	o    *Object
	path string
}

func (p place) String() string {
	return fmt.Sprintf("%s (%s)", p.o.Ref(), p.o.FieldPos(p.path))
}

type cidrUse struct {
	prefix netip.Prefix
	at     place
}

func newValidator(d *Desired) *validator {
	v := &validator{
		d:          d,
		nodePorts:  map[int32]nodePortUse{},
		clusterIPs: map[netip.Addr]place{},
		addresses:  map[string]place{},
	}
	if p, err := netip.ParsePrefix(d.Cluster.Spec.PodCIDR); err == nil && p == p.Masked() {
		v.podCIDR = p
	}
	if p, err := netip.ParsePrefix(d.Cluster.Spec.ServiceCIDR); err == nil && p == p.Masked() {
		v.serviceCIDR = p
	}
	return v
}

// checker reports the problems of one object.
type checker struct {
	v *validator
	o *Object
}

func (c *checker) add(sev Severity, path, msg string) {
	c.v.diags = append(c.v.diags, Diagnostic{Severity: sev, Pos: c.o.FieldPos(path), Object: c.o.Ref(), Field: path, Message: msg})
}

func (c *checker) errorf(path, format string, args ...any) {
	c.add(SeverityError, path, fmt.Sprintf(format, args...))
}

func (c *checker) warnf(path, format string, args ...any) {
	c.add(SeverityWarning, path, fmt.Sprintf(format, args...))
}

// invalid reports the messages of an apimachinery validation function
// about value, if there are any, and says whether there were.
func (c *checker) invalid(path, what, value string, msgs []string) bool {
	if len(msgs) == 0 {
		return false
	}
	c.errorf(path, "invalid %s %q: %s", what, value, joinMsgs(msgs))
	return true
}

// get looks an object up in the namespace of the object being checked.
func (c *checker) get(group, kind, name string) *Object {
	return c.v.d.Get(Key{Group: group, Kind: kind, Namespace: c.o.Namespace, Name: name})
}

// missing reports a reference that does not resolve: an error, or a
// warning when the reference is optional.
func (c *checker) missing(path string, optional *bool, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if optional != nil && *optional {
		c.warnf(path, "%s; optional, so it is left out", msg)
		return
	}
	c.errorf(path, "%s", msg)
}

func (v *validator) object(o *Object) {
	c := &checker{v: v, o: o}
	c.meta()
	switch x := o.Obj.(type) {
	case *corev1.Pod:
		c.podSpec(&x.Spec, podContext{path: "spec"})
	case *corev1.Service:
		c.service(x)
	case *corev1.ConfigMap:
		c.configMap(x)
	case *corev1.Secret:
		c.secret(x)
	case *corev1.PersistentVolumeClaim:
		c.pvcSpec(&x.Spec, "spec")
	case *appsv1.Deployment:
		c.deployment(x)
	case *appsv1.StatefulSet:
		c.statefulSet(x)
	case *appsv1.DaemonSet:
		c.daemonSet(x)
	case *batchv1.Job:
		c.job(x)
	case *batchv1.CronJob:
		c.cronJob(x)
	case *autoscalingv2.HorizontalPodAutoscaler:
		c.hpa(x)
	case *networkingv1.Ingress:
		c.ingress(x)
	case *networkingv1.NetworkPolicy:
		c.networkPolicy(x)
	case *rbacv1.RoleBinding:
		c.roleBinding(x.RoleRef, x.Subjects, true)
	case *rbacv1.ClusterRoleBinding:
		c.roleBinding(x.RoleRef, x.Subjects, false)
	case *storagev1.StorageClass:
		c.storageClass(x)
	case *v1alpha1.Machine:
		c.machine(x)
	case *v1alpha1.Cluster:
		c.cluster(x)
	}
}

// meta checks an object's name, namespace, labels and annotations.
func (c *checker) meta() {
	m := Meta(c.o)
	if m == nil {
		return
	}
	if m.GenerateName != "" {
		c.errorf("metadata.generateName", "generateName is not supported: berth tracks objects by name from one commit to the next, so set metadata.name instead")
	}
	switch {
	case m.Name != "":
		c.name(m.Name)
	case m.GenerateName == "":
		c.errorf("metadata.name", "a name is required")
	}
	if ns := c.o.Namespace; ns != "" {
		if !c.invalid("metadata.namespace", "namespace", ns, content.IsDNS1123Label(ns)) &&
			!implicitNamespaces[ns] && c.v.d.Get(Key{Kind: "Namespace", Name: ns}) == nil {
			c.errorf("metadata.namespace", "namespace %q is not declared: add a Namespace object named %s", ns, ns)
		}
	}
	c.labels("metadata.labels", m.Labels)
	c.annotations("metadata.annotations", m.Annotations)
}

// name checks metadata.name the way Kubernetes does for the kind.
func (c *checker) name(name string) {
	const path = "metadata.name"
	switch c.o.Kind {
	case "Namespace":
		c.invalid(path, "name", name, content.IsDNS1123Label(name))
	case "Service":
		// A Service's name is a DNS label in the cluster domain, and
		// becomes environment variables, so it must start with a letter.
		c.invalid(path, "name", name, validation.IsDNS1035Label(name))
	case "StatefulSet":
		// Its pods are named NAME-ORDINAL and take that as host name.
		if !c.invalid(path, "name", name, content.IsDNS1123Label(name)) {
			if ss, ok := c.o.Obj.(*appsv1.StatefulSet); ok && ss.Spec.Replicas != nil && *ss.Spec.Replicas > 0 {
				pod := name + "-" + strconv.Itoa(int(*ss.Spec.Replicas)-1)
				if len(pod) > validation.DNS1123LabelMaxLength {
					c.errorf(path, "name is too long: pod %s would have a name over %d characters", pod, validation.DNS1123LabelMaxLength)
				}
			}
		}
	case "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding":
		c.invalid(path, "name", name, content.IsPathSegmentName(name))
	case "Job":
		// The name is the value of the job-name label of its pods.
		if !c.invalid(path, "name", name, content.IsDNS1123Subdomain(name)) && len(name) > validation.LabelValueMaxLength {
			c.errorf(path, "name must be no more than %d characters: it labels the Job's pods", validation.LabelValueMaxLength)
		}
	case "CronJob":
		// Its Jobs are named NAME-TIMESTAMP, 11 more characters.
		const max = 52
		if !c.invalid(path, "name", name, content.IsDNS1123Subdomain(name)) && len(name) > max {
			c.errorf(path, "name must be no more than %d characters: the names of its Jobs add 11", max)
		}
	default:
		c.invalid(path, "name", name, content.IsDNS1123Subdomain(name))
	}
}

// labels checks label keys and values, each at its own path.
func (c *checker) labels(path string, m map[string]string) {
	for _, k := range sortedKeys(m) {
		p := path + "[" + k + "]"
		c.invalid(p, "label key", k, content.IsLabelKey(k))
		c.invalid(p, "label value", m[k], content.IsLabelValue(m[k]))
	}
}

// annotationsMaxSize is the total size Kubernetes allows for an object's
// annotations, keys and values.
const annotationsMaxSize = 256 << 10

func (c *checker) annotations(path string, m map[string]string) {
	size := 0
	for _, k := range sortedKeys(m) {
		size += len(k) + len(m[k])
		// Annotation keys are label keys, in any case.
		c.invalid(path+"["+k+"]", "annotation key", k, content.IsLabelKey(strings.ToLower(k)))
	}
	if size > annotationsMaxSize {
		c.errorf(path, "annotations total %d bytes, over the limit of %d", size, annotationsMaxSize)
	}
}

// selector checks a label selector and returns it as a labels.Selector,
// or nil when it is invalid.
func (c *checker) selector(path string, s *metav1.LabelSelector) labels.Selector {
	if s == nil {
		return labels.Everything()
	}
	ok := true
	for _, k := range sortedKeys(s.MatchLabels) {
		p := path + ".matchLabels[" + k + "]"
		if c.invalid(p, "label key", k, content.IsLabelKey(k)) || c.invalid(p, "label value", s.MatchLabels[k], content.IsLabelValue(s.MatchLabels[k])) {
			ok = false
		}
	}
	for i, e := range s.MatchExpressions {
		p := path + ".matchExpressions[" + strconv.Itoa(i) + "]"
		if c.invalid(p+".key", "label key", e.Key, content.IsLabelKey(e.Key)) {
			ok = false
		}
		switch e.Operator {
		case metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn:
			if len(e.Values) == 0 {
				c.errorf(p+".values", "values are required with operator %s", e.Operator)
				ok = false
			}
		case metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist:
			if len(e.Values) > 0 {
				c.errorf(p+".values", "values must be empty with operator %s", e.Operator)
				ok = false
			}
		default:
			c.errorf(p+".operator", "unknown operator %q: use In, NotIn, Exists or DoesNotExist", e.Operator)
			ok = false
		}
		for j, val := range e.Values {
			if c.invalid(p+".values["+strconv.Itoa(j)+"]", "label value", val, content.IsLabelValue(val)) {
				ok = false
			}
		}
	}
	if !ok {
		return nil
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		c.errorf(path, "invalid selector: %v", err)
		return nil
	}
	return sel
}

// podSelector checks that a workload's selector is set, valid and selects
// its own pod template.
func (c *checker) podSelector(path string, s *metav1.LabelSelector, templateLabels map[string]string, templatePath string) {
	if s == nil || len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0 {
		c.errorf(path, "a selector is required: set %s.matchLabels to labels of the pod template", path)
		return
	}
	sel := c.selector(path, s)
	if sel != nil && !sel.Matches(labels.Set(templateLabels)) {
		c.errorf(path, "selector %s does not match the pod template's labels (%s): the workload would not own its pods", sel, templatePath)
	}
}

// portNumber checks a port number is in 1..65535.
func (c *checker) portNumber(path string, what string, port int32) bool {
	if port < 1 || port > 65535 {
		c.errorf(path, "%s %d is out of range: must be between 1 and 65535", what, port)
		return false
	}
	return true
}

func (c *checker) protocol(path string, p corev1.Protocol) {
	switch p {
	case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
	default:
		c.errorf(path, "unknown protocol %q: use TCP, UDP or SCTP", p)
	}
}

// oneOf reports a value outside its allowed set.
func oneOf[T ~string](c *checker, path string, v T, allowed ...T) bool {
	if slices.Contains(allowed, v) {
		return true
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	c.errorf(path, "unknown value %q: use %s", v, orList(names))
	return false
}

func orList(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

func sortedKeys[K ~string, V any](m map[K]V) []string {
	if len(m) == 0 {
		return nil
	}
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, string(k))
	}
	slices.Sort(ks)
	return ks
}

// joinMsgs joins apimachinery's validation messages, without the regular
// expressions they quote, which help nobody reading a manifest.
func joinMsgs(msgs []string) string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = cleanMsg(m)
	}
	return strings.Join(out, "; ")
}

func cleanMsg(s string) string {
	const re = "regex used for validation is '"
	i := strings.Index(s, re)
	if i < 0 {
		return s
	}
	j := strings.LastIndex(s, "')")
	if j < i {
		return s
	}
	head, tail := strings.TrimRight(s[:i], " ,"), s[j+2:]
	if strings.HasSuffix(head, "(") {
		head = strings.TrimRight(strings.TrimSuffix(head, "("), " ")
	} else {
		head += ")"
	}
	return strings.ReplaceAll(head, ",  or ", " or ") + tail
}

// quoted lists names for a message, sorted, at most a few of them.
func quoted(names []string) string {
	const max = 8
	slices.Sort(names)
	var b strings.Builder
	for i, n := range names {
		if i == max {
			fmt.Fprintf(&b, ", and %d more", len(names)-max)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(n))
	}
	return b.String()
}
