package resolve

import (
	corev1 "k8s.io/api/core/v1"
)

// Via is how a pod sees a ConfigMap or Secret, which decides when a
// change of its content reaches the pod.
type Via string

// The ways a pod sees a ConfigMap or Secret.
const (
	// ViaVolume: files of a mounted volume (configMap, secret or
	// projected), updated in place by the agent.
	ViaVolume Via = "volume"
	// ViaSubPath: one file or directory of such a volume, mounted by
	// subPath: a bind mount of the old content, so seen only after the
	// container restarts, as in Kubernetes.
	ViaSubPath Via = "subPath"
	// ViaEnv: an env var's configMapKeyRef or secretKeyRef, seen at the
	// container's next start.
	ViaEnv Via = "env"
	// ViaEnvFrom: an envFrom source, seen at the container's next start.
	ViaEnvFrom Via = "envFrom"
	// ViaImagePull: an imagePullSecret, used at the next pull.
	ViaImagePull Via = "imagePullSecret"
)

// Ref is one reference of a pod to a ConfigMap or Secret.
type Ref struct {
	Kind Kind
	Name string
	Via  Via
	// Container is the container that sees it ("" for an image pull
	// secret, or a volume no container mounts).
	Container string
	// Init marks Container as an init container.
	Init bool
	// Env is the variable, for ViaEnv.
	Env string
	// Volume and MountPath, for ViaVolume and ViaSubPath.
	Volume    string
	MountPath string
	Optional  bool
}

// InPlace reports whether a change of the object's content reaches the
// running pod without a restart: true only for files of a mounted volume.
func (r Ref) InPlace() bool { return r.Via == ViaVolume }

// References lists every ConfigMap and Secret a pod spec refers to, in
// the order of the spec: for each container (init containers first) its
// envFrom, env and volume mounts, then volumes no container mounts, then
// image pull secrets.
func References(spec *corev1.PodSpec) []Ref {
	var out []Ref
	mounted := map[string]bool{}
	each := func(cs []corev1.Container, init bool) {
		for i := range cs {
			c := &cs[i]
			for _, f := range c.EnvFrom {
				switch {
				case f.ConfigMapRef != nil:
					out = append(out, Ref{Kind: KindConfigMap, Name: f.ConfigMapRef.Name, Via: ViaEnvFrom, Container: c.Name, Init: init, Optional: isTrue(f.ConfigMapRef.Optional)})
				case f.SecretRef != nil:
					out = append(out, Ref{Kind: KindSecret, Name: f.SecretRef.Name, Via: ViaEnvFrom, Container: c.Name, Init: init, Optional: isTrue(f.SecretRef.Optional)})
				}
			}
			for _, e := range c.Env {
				if e.Value != "" || e.ValueFrom == nil {
					continue // a literal value wins over valueFrom, as on a kubelet
				}
				switch vf := e.ValueFrom; {
				case vf.ConfigMapKeyRef != nil:
					out = append(out, Ref{Kind: KindConfigMap, Name: vf.ConfigMapKeyRef.Name, Via: ViaEnv, Container: c.Name, Init: init, Env: e.Name, Optional: isTrue(vf.ConfigMapKeyRef.Optional)})
				case vf.SecretKeyRef != nil:
					out = append(out, Ref{Kind: KindSecret, Name: vf.SecretKeyRef.Name, Via: ViaEnv, Container: c.Name, Init: init, Env: e.Name, Optional: isTrue(vf.SecretKeyRef.Optional)})
				}
			}
			for _, m := range c.VolumeMounts {
				v := findVolume(spec, m.Name)
				if v == nil {
					continue
				}
				mounted[m.Name] = true
				via := ViaVolume
				if m.SubPath != "" || m.SubPathExpr != "" {
					via = ViaSubPath
				}
				for _, r := range volumeRefs(v) {
					r.Via, r.Container, r.Init, r.MountPath = via, c.Name, init, m.MountPath
					out = append(out, r)
				}
			}
		}
	}
	each(spec.InitContainers, true)
	each(spec.Containers, false)
	for i := range spec.Volumes {
		if !mounted[spec.Volumes[i].Name] {
			for _, r := range volumeRefs(&spec.Volumes[i]) {
				r.Via = ViaVolume
				out = append(out, r)
			}
		}
	}
	for _, s := range spec.ImagePullSecrets {
		if s.Name != "" {
			out = append(out, Ref{Kind: KindSecret, Name: s.Name, Via: ViaImagePull})
		}
	}
	return out
}

// Affected splits the references of spec to one ConfigMap or Secret into
// those that see a change of its content in place and those that see it
// only after a restart (env, envFrom, subPath mounts) or at the next
// image pull. Both are empty when spec does not refer to it.
func Affected(spec *corev1.PodSpec, kind Kind, name string) (inPlace, later []Ref) {
	for _, r := range References(spec) {
		if r.Kind != kind || r.Name != name {
			continue
		}
		if r.InPlace() {
			inPlace = append(inPlace, r)
		} else {
			later = append(later, r)
		}
	}
	return inPlace, later
}

func findVolume(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// volumeRefs lists the ConfigMaps and Secrets a volume holds.
func volumeRefs(v *corev1.Volume) []Ref {
	var out []Ref
	switch s := &v.VolumeSource; {
	case s.ConfigMap != nil:
		out = append(out, Ref{Kind: KindConfigMap, Name: s.ConfigMap.Name, Optional: isTrue(s.ConfigMap.Optional)})
	case s.Secret != nil:
		out = append(out, Ref{Kind: KindSecret, Name: s.Secret.SecretName, Optional: isTrue(s.Secret.Optional)})
	case s.Projected != nil:
		for _, p := range s.Projected.Sources {
			switch {
			case p.ConfigMap != nil:
				out = append(out, Ref{Kind: KindConfigMap, Name: p.ConfigMap.Name, Optional: isTrue(p.ConfigMap.Optional)})
			case p.Secret != nil:
				out = append(out, Ref{Kind: KindSecret, Name: p.Secret.Name, Optional: isTrue(p.Secret.Optional)})
			}
		}
	}
	for i := range out {
		out[i].Volume = v.Name
	}
	return out
}
