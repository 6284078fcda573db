package render

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// podContext says where a pod spec sits and what its owner allows.
type podContext struct {
	// path of the PodSpec: "spec", "spec.template.spec", ...
	path string
	// restartPolicies allowed; nil means any valid one.
	restartPolicies []corev1.RestartPolicy
	// claims are a StatefulSet's volumeClaimTemplates, which containers
	// mount by name like volumes.
	claims map[string]bool
}

// podState collects the names a pod's parts must keep unique.
type podState struct {
	volumes    map[string]string // name -> path
	containers map[string]string
	portNames  map[string]string
}

// template checks a workload's pod template.
func (c *checker) template(t *corev1.PodTemplateSpec, path string, pc podContext) {
	c.labels(path+".metadata.labels", t.Labels)
	c.annotations(path+".metadata.annotations", t.Annotations)
	pc.path = path + ".spec"
	c.podSpec(&t.Spec, pc)
}

func (c *checker) podSpec(s *corev1.PodSpec, pc podContext) {
	p := pc.path
	st := &podState{volumes: map[string]string{}, containers: map[string]string{}, portNames: map[string]string{}}
	for i := range s.Volumes {
		c.volume(&s.Volumes[i], fmt.Sprintf("%s.volumes[%d]", p, i), st)
	}
	if len(s.Containers) == 0 {
		c.errorf(p+".containers", "at least one container is required")
	}
	for i := range s.InitContainers {
		c.container(&s.InitContainers[i], fmt.Sprintf("%s.initContainers[%d]", p, i), true, st, pc)
	}
	for i := range s.Containers {
		c.container(&s.Containers[i], fmt.Sprintf("%s.containers[%d]", p, i), false, st, pc)
	}

	if oneOf(c, p+".restartPolicy", s.RestartPolicy, corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever) &&
		pc.restartPolicies != nil && !slices.Contains(pc.restartPolicies, s.RestartPolicy) {
		allowed := make([]string, len(pc.restartPolicies))
		for i, r := range pc.restartPolicies {
			allowed[i] = string(r)
		}
		if c.o.HasField(p + ".restartPolicy") {
			c.errorf(p+".restartPolicy", "restartPolicy %s is not allowed for the pods of a %s: use %s", s.RestartPolicy, c.o.Kind, orList(allowed))
		} else {
			c.errorf(p+".restartPolicy", "restartPolicy is required for the pods of a %s: set %s (the default, %s, would rerun a finished pod forever)", c.o.Kind, orList(allowed), s.RestartPolicy)
		}
	}
	if oneOf(c, p+".dnsPolicy", s.DNSPolicy, corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet, corev1.DNSDefault, corev1.DNSNone) &&
		s.DNSPolicy == corev1.DNSNone && (s.DNSConfig == nil || len(s.DNSConfig.Nameservers) == 0) {
		c.errorf(p+".dnsPolicy", "dnsPolicy None needs dnsConfig.nameservers")
	}

	if sa := s.ServiceAccountName; sa != "" && sa != defaultServiceAccount {
		if !c.invalid(p+".serviceAccountName", "ServiceAccount name", sa, content.IsDNS1123Subdomain(sa)) && c.get("", "ServiceAccount", sa) == nil {
			c.errorf(p+".serviceAccountName", "ServiceAccount %q not found in namespace %s", sa, c.o.Namespace)
		}
	}
	for i, r := range s.ImagePullSecrets {
		c.secretRef(fmt.Sprintf("%s.imagePullSecrets[%d].name", p, i), r.Name, nil)
	}
	c.labels(p+".nodeSelector", s.NodeSelector)
	for i, t := range s.Tolerations {
		c.toleration(fmt.Sprintf("%s.tolerations[%d]", p, i), t)
	}
}

func (c *checker) toleration(p string, t corev1.Toleration) {
	if t.Key != "" {
		c.invalid(p+".key", "key", t.Key, content.IsLabelKey(t.Key))
	}
	switch t.Operator {
	case corev1.TolerationOpExists:
		if t.Value != "" {
			c.errorf(p+".value", "value must be empty with operator Exists")
		}
	case corev1.TolerationOpEqual, "":
		if t.Key == "" {
			c.errorf(p+".operator", "a toleration without a key must use operator Exists")
		}
		c.invalid(p+".value", "value", t.Value, content.IsLabelValue(t.Value))
	default:
		c.errorf(p+".operator", "unknown operator %q: use Equal or Exists", t.Operator)
	}
	if t.Effect != "" {
		oneOf(c, p+".effect", t.Effect, corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute)
	}
}

func (c *checker) volume(v *corev1.Volume, p string, st *podState) {
	switch {
	case v.Name == "":
		c.errorf(p+".name", "a volume name is required")
	case c.invalid(p+".name", "volume name", v.Name, content.IsDNS1123Label(v.Name)):
	default:
		if prev, dup := st.volumes[v.Name]; dup {
			c.errorf(p+".name", "volume name %q is used twice in the pod (also %s)", v.Name, prev)
		} else {
			st.volumes[v.Name] = p
		}
	}
	s := &v.VolumeSource
	if n := volumeSources(s); n > 1 {
		c.errorf(p, "a volume has exactly one source; this one has %d", n)
	}
	switch {
	case s.ConfigMap != nil:
		c.configMapRef(p+".configMap.name", s.ConfigMap.Name, s.ConfigMap.Optional, keyPaths(p+".configMap", s.ConfigMap.Items)...)
	case s.Secret != nil:
		c.secretRef(p+".secret.secretName", s.Secret.SecretName, s.Secret.Optional, keyPaths(p+".secret", s.Secret.Items)...)
	case s.Projected != nil:
		for i, src := range s.Projected.Sources {
			sp := fmt.Sprintf("%s.projected.sources[%d]", p, i)
			if cm := src.ConfigMap; cm != nil {
				c.configMapRef(sp+".configMap.name", cm.Name, cm.Optional, keyPaths(sp+".configMap", cm.Items)...)
			}
			if sec := src.Secret; sec != nil {
				c.secretRef(sp+".secret.name", sec.Name, sec.Optional, keyPaths(sp+".secret", sec.Items)...)
			}
		}
	case s.PersistentVolumeClaim != nil:
		name := s.PersistentVolumeClaim.ClaimName
		switch {
		case name == "":
			c.errorf(p+".persistentVolumeClaim.claimName", "claimName is required")
		case c.get("", "PersistentVolumeClaim", name) == nil:
			c.errorf(p+".persistentVolumeClaim.claimName", "PersistentVolumeClaim %q not found in namespace %s", name, c.o.Namespace)
		}
	case s.Ephemeral != nil && s.Ephemeral.VolumeClaimTemplate != nil:
		c.pvcSpec(&s.Ephemeral.VolumeClaimTemplate.Spec, p+".ephemeral.volumeClaimTemplate.spec")
	case s.HostPath != nil:
		if !path.IsAbs(s.HostPath.Path) {
			c.errorf(p+".hostPath.path", "hostPath.path %q must be an absolute path", s.HostPath.Path)
		}
	}
}

// keyRef is a key of a ConfigMap or Secret that a reference needs, with
// the path of the field that names it.
type keyRef struct{ key, path string }

func keyPaths(p string, items []corev1.KeyToPath) []keyRef {
	if len(items) == 0 {
		return nil
	}
	out := make([]keyRef, len(items))
	for i, it := range items {
		out[i] = keyRef{it.Key, fmt.Sprintf("%s.items[%d].key", p, i)}
	}
	return out
}

func (c *checker) configMapRef(p, name string, optional *bool, keys ...keyRef) {
	c.dataRef(p, "ConfigMap", name, optional, keys)
}

func (c *checker) secretRef(p, name string, optional *bool, keys ...keyRef) {
	c.dataRef(p, "Secret", name, optional, keys)
}

// dataRef resolves a reference to a ConfigMap or Secret, and to the keys
// it needs there.
func (c *checker) dataRef(p, kind, name string, optional *bool, keys []keyRef) {
	if name == "" {
		c.errorf(p, "the %s name is required", kind)
		return
	}
	o := c.get("", kind, name)
	if o == nil {
		c.missing(p, optional, "%s %q not found in namespace %s", kind, name, c.o.Namespace)
		return
	}
	for _, k := range keys {
		if k.key == "" {
			c.errorf(k.path, "a key is required")
			continue
		}
		if !hasDataKey(o, k.key) {
			c.missing(k.path, optional, "%s %q has no key %q (it has %s)", kind, name, k.key, describeKeys(dataKeys(o)))
		}
	}
}

func hasDataKey(o *Object, key string) bool {
	switch x := o.Obj.(type) {
	case *corev1.ConfigMap:
		_, a := x.Data[key]
		_, b := x.BinaryData[key]
		return a || b
	case *corev1.Secret:
		_, a := x.Data[key]
		_, b := x.StringData[key]
		return a || b
	}
	return false
}

func dataKeys(o *Object) []string {
	var ks []string
	switch x := o.Obj.(type) {
	case *corev1.ConfigMap:
		ks = append(sortedKeys(x.Data), sortedKeys(x.BinaryData)...)
	case *corev1.Secret:
		ks = append(sortedKeys(x.Data), sortedKeys(x.StringData)...)
	}
	slices.Sort(ks)
	return slices.Compact(ks)
}

func describeKeys(ks []string) string {
	if len(ks) == 0 {
		return "no keys"
	}
	return quoted(ks)
}

func (c *checker) container(ct *corev1.Container, p string, init bool, st *podState, pc podContext) {
	switch {
	case ct.Name == "":
		c.errorf(p+".name", "a container name is required")
	case c.invalid(p+".name", "container name", ct.Name, content.IsDNS1123Label(ct.Name)):
	default:
		if prev, dup := st.containers[ct.Name]; dup {
			c.errorf(p+".name", "container name %q is used twice in the pod (also %s)", ct.Name, prev)
		} else {
			st.containers[ct.Name] = p
		}
	}
	if ct.Image == "" {
		c.errorf(p+".image", "an image is required")
	}
	oneOf(c, p+".imagePullPolicy", ct.ImagePullPolicy, corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever)
	// berth has no attach: a container waiting on its stdin or a terminal
	// would wait for ever. Say so here rather than run it silently without.
	if ct.Stdin {
		c.errorf(p+".stdin", "stdin is not supported: berth does not attach to containers (only exec sessions get a stdin)")
	}
	if ct.TTY {
		c.errorf(p+".tty", "tty is not supported: berth does not attach to containers (only exec sessions get a terminal)")
	}

	for i, port := range ct.Ports {
		pp := fmt.Sprintf("%s.ports[%d]", p, i)
		c.portNumber(pp+".containerPort", "containerPort", port.ContainerPort)
		if port.HostPort != 0 {
			c.portNumber(pp+".hostPort", "hostPort", port.HostPort)
		}
		c.protocol(pp+".protocol", port.Protocol)
		if port.Name != "" && !c.invalid(pp+".name", "port name", port.Name, validation.IsValidPortName(port.Name)) {
			if prev, dup := st.portNames[port.Name]; dup {
				c.errorf(pp+".name", "port name %q is used twice in the pod (also %s)", port.Name, prev)
			} else {
				st.portNames[port.Name] = pp + ".name"
			}
		}
	}

	for i := range ct.Env {
		c.env(&ct.Env[i], fmt.Sprintf("%s.env[%d]", p, i))
	}
	for i, ef := range ct.EnvFrom {
		ep := fmt.Sprintf("%s.envFrom[%d]", p, i)
		if (ef.ConfigMapRef == nil) == (ef.SecretRef == nil) {
			c.errorf(ep, "envFrom needs exactly one of configMapRef and secretRef")
		}
		if r := ef.ConfigMapRef; r != nil {
			c.configMapRef(ep+".configMapRef.name", r.Name, r.Optional)
		}
		if r := ef.SecretRef; r != nil {
			c.secretRef(ep+".secretRef.name", r.Name, r.Optional)
		}
	}

	c.resources(p+".resources", &ct.Resources)

	sidecar := init && ct.RestartPolicy != nil && *ct.RestartPolicy == corev1.ContainerRestartPolicyAlways
	probes := []struct {
		name   string
		probe  *corev1.Probe
		oneRun bool // successThreshold must be 1
	}{
		{"livenessProbe", ct.LivenessProbe, true},
		{"readinessProbe", ct.ReadinessProbe, false},
		{"startupProbe", ct.StartupProbe, true},
	}
	for _, pr := range probes {
		if pr.probe == nil {
			continue
		}
		if init && !sidecar {
			c.errorf(p+"."+pr.name, "an init container cannot have a %s (only a sidecar, with restartPolicy: Always, can)", pr.name)
			continue
		}
		c.probe(p+"."+pr.name, pr.probe, ct, pr.oneRun)
	}

	mounts := map[string]string{}
	for i, m := range ct.VolumeMounts {
		mp := fmt.Sprintf("%s.volumeMounts[%d]", p, i)
		switch {
		case m.Name == "":
			c.errorf(mp+".name", "the volume name is required")
		case st.volumes[m.Name] == "" && !pc.claims[m.Name]:
			where := "spec.volumes"
			if pc.claims != nil {
				where += " or spec.volumeClaimTemplates"
			}
			c.errorf(mp+".name", "no volume named %q in the pod: declare it in %s", m.Name, pathOf(pc.path, where))
		}
		switch {
		case m.MountPath == "":
			c.errorf(mp+".mountPath", "mountPath is required")
		case mounts[m.MountPath] != "":
			c.errorf(mp+".mountPath", "mountPath %q is used twice in the container (also %s)", m.MountPath, mounts[m.MountPath])
		default:
			mounts[m.MountPath] = mp + ".mountPath"
		}
	}
}

// pathOf names a pod spec field for a message: the pod spec's own
// volumes ("spec.template.spec.volumes"), or the StatefulSet's claim
// templates, which sit outside it.
func pathOf(specPath, where string) string {
	if specPath == "spec" {
		return where
	}
	return specPath + where[len("spec"):]
}

func (c *checker) env(e *corev1.EnvVar, p string) {
	switch {
	case e.Name == "":
		c.errorf(p+".name", "a name is required")
	case c.invalid(p+".name", "environment variable name", e.Name, validation.IsRelaxedEnvVarName(e.Name)):
	case len(validation.IsEnvVarName(e.Name)) > 0:
		c.warnf(p+".name", "environment variable name %q is accepted, but programs and shells may not read it: %s", e.Name, joinMsgs(validation.IsEnvVarName(e.Name)))
	}
	vf := e.ValueFrom
	if vf == nil {
		return
	}
	if e.Value != "" {
		c.errorf(p+".valueFrom", "value and valueFrom cannot both be set")
	}
	n := 0
	for _, set := range []bool{vf.FieldRef != nil, vf.ResourceFieldRef != nil, vf.ConfigMapKeyRef != nil, vf.SecretKeyRef != nil, vf.FileKeyRef != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		c.errorf(p+".valueFrom", "valueFrom needs exactly one of fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef and fileKeyRef")
	}
	if r := vf.ConfigMapKeyRef; r != nil {
		c.configMapRef(p+".valueFrom.configMapKeyRef.name", r.Name, r.Optional, keyRef{r.Key, p + ".valueFrom.configMapKeyRef.key"})
	}
	if r := vf.SecretKeyRef; r != nil {
		c.secretRef(p+".valueFrom.secretKeyRef.name", r.Name, r.Optional, keyRef{r.Key, p + ".valueFrom.secretKeyRef.key"})
	}
}

// resources checks that no request is negative or exceeds its limit.
func (c *checker) resources(p string, r *corev1.ResourceRequirements) {
	for _, name := range sortedKeys(r.Requests) {
		q := r.Requests[corev1.ResourceName(name)]
		rp := p + ".requests[" + name + "]"
		if q.Sign() < 0 {
			c.errorf(rp, "request %s must not be negative", q.String())
			continue
		}
		if lim, ok := r.Limits[corev1.ResourceName(name)]; ok && q.Cmp(lim) > 0 {
			c.errorf(rp, "request %s is more than the limit %s", q.String(), lim.String())
		}
	}
	for _, name := range sortedKeys(r.Limits) {
		if q := r.Limits[corev1.ResourceName(name)]; q.Sign() < 0 {
			c.errorf(p+".limits["+name+"]", "limit %s must not be negative", q.String())
		}
	}
}

func (c *checker) probe(p string, pr *corev1.Probe, ct *corev1.Container, oneRun bool) {
	var handlers []string
	if pr.Exec != nil {
		handlers = append(handlers, "exec")
	}
	if pr.HTTPGet != nil {
		handlers = append(handlers, "httpGet")
		c.probePort(p+".httpGet.port", pr.HTTPGet.Port, ct)
	}
	if pr.TCPSocket != nil {
		handlers = append(handlers, "tcpSocket")
		c.probePort(p+".tcpSocket.port", pr.TCPSocket.Port, ct)
	}
	if pr.GRPC != nil {
		handlers = append(handlers, "grpc")
		c.portNumber(p+".grpc.port", "port", pr.GRPC.Port)
	}
	switch len(handlers) {
	case 0:
		c.errorf(p, "a probe needs one handler: exec, httpGet, tcpSocket or grpc")
	case 1:
	default:
		c.errorf(p, "a probe has exactly one handler; this one has %d: %s", len(handlers), strings.Join(handlers, ", "))
	}
	for _, f := range []struct {
		name string
		v    int32
		min  int32
	}{
		{"initialDelaySeconds", pr.InitialDelaySeconds, 0},
		{"timeoutSeconds", pr.TimeoutSeconds, 1},
		{"periodSeconds", pr.PeriodSeconds, 1},
		{"successThreshold", pr.SuccessThreshold, 1},
		{"failureThreshold", pr.FailureThreshold, 1},
	} {
		if f.v < f.min {
			c.errorf(p+"."+f.name, "%s must be at least %d", f.name, f.min)
		}
	}
	if oneRun && pr.SuccessThreshold > 1 {
		c.errorf(p+".successThreshold", "successThreshold must be 1 for liveness and startup probes")
	}
}

// probePort checks a probe's port: a number, or the name of one of the
// container's ports.
func (c *checker) probePort(p string, port intstr.IntOrString, ct *corev1.Container) {
	if port.Type == intstr.Int {
		c.portNumber(p, "port", port.IntVal)
		return
	}
	if c.invalid(p, "port name", port.StrVal, validation.IsValidPortName(port.StrVal)) {
		return
	}
	for _, cp := range ct.Ports {
		if cp.Name == port.StrVal {
			return
		}
	}
	c.errorf(p, "the container has no port named %q", port.StrVal)
}

// pvcSpec checks a claim: in a PersistentVolumeClaim, a StatefulSet's
// volumeClaimTemplates or an ephemeral volume.
func (c *checker) pvcSpec(s *corev1.PersistentVolumeClaimSpec, p string) {
	if len(s.AccessModes) == 0 {
		c.errorf(p+".accessModes", "at least one access mode is required")
	}
	for i, m := range s.AccessModes {
		oneOf(c, p+".accessModes["+strconv.Itoa(i)+"]", m,
			corev1.ReadWriteOnce, corev1.ReadOnlyMany, corev1.ReadWriteMany, corev1.ReadWriteOncePod)
	}
	if q, ok := s.Resources.Requests[corev1.ResourceStorage]; !ok {
		c.errorf(p+".resources.requests", "a storage request is required (resources.requests.storage)")
	} else if q.Sign() <= 0 {
		c.errorf(p+".resources.requests[storage]", "the storage request must be more than 0")
	}
	if s.VolumeMode != nil {
		oneOf(c, p+".volumeMode", *s.VolumeMode, corev1.PersistentVolumeFilesystem, corev1.PersistentVolumeBlock)
	}
	if sc := s.StorageClassName; sc != nil && *sc != "" {
		if c.v.d.Get(Key{Group: "storage.k8s.io", Kind: "StorageClass", Name: *sc}) == nil {
			c.errorf(p+".storageClassName", "StorageClass %q not found", *sc)
		}
	}
}
