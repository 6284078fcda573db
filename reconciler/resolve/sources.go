package resolve

import (
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/render"
)

// Kind is the kind of object a pod refers to.
type Kind string

// The kinds of object a pod's references name.
const (
	KindConfigMap Kind = "ConfigMap"
	KindSecret    Kind = "Secret"
)

type nsName struct{ namespace, name string }

// Sources holds the ConfigMaps and Secrets pods may refer to, by
// namespace and name. A Secret's stringData is merged over its data, as
// the API server does on write. The zero value is empty and ready to use;
// a Sources is safe for concurrent reads once filled.
type Sources struct {
	configMaps map[nsName]*corev1.ConfigMap
	secrets    map[nsName]*secret
}

// secret is a Secret with its stringData merged into its data.
type secret struct {
	typ  corev1.SecretType
	data map[string][]byte
}

// SourcesOf indexes the ConfigMaps and Secrets of a rendered repository.
func SourcesOf(d *render.Desired) *Sources {
	s := &Sources{}
	for _, o := range d.Objects {
		switch v := o.Obj.(type) {
		case *corev1.ConfigMap:
			s.add(o.Namespace, v.Name, v)
		case *corev1.Secret:
			s.addSecret(o.Namespace, v)
		}
	}
	return s
}

// AddConfigMap adds (or replaces) a ConfigMap; an empty namespace means
// "default". The ConfigMap is not copied and must not change afterwards.
func (s *Sources) AddConfigMap(cm *corev1.ConfigMap) {
	s.add(cm.Namespace, cm.Name, cm)
}

// AddSecret adds (or replaces) a Secret; an empty namespace means
// "default".
func (s *Sources) AddSecret(sec *corev1.Secret) {
	s.addSecret(sec.Namespace, sec)
}

func (s *Sources) add(ns, name string, cm *corev1.ConfigMap) {
	if s.configMaps == nil {
		s.configMaps = map[nsName]*corev1.ConfigMap{}
	}
	s.configMaps[key(ns, name)] = cm
}

func (s *Sources) addSecret(ns string, sec *corev1.Secret) {
	if s.secrets == nil {
		s.secrets = map[nsName]*secret{}
	}
	data := make(map[string][]byte, len(sec.Data)+len(sec.StringData))
	maps.Copy(data, sec.Data)
	for k, v := range sec.StringData {
		data[k] = []byte(v)
	}
	typ := sec.Type
	if typ == "" {
		typ = corev1.SecretTypeOpaque
	}
	s.secrets[key(ns, sec.Name)] = &secret{typ: typ, data: data}
}

func key(ns, name string) nsName {
	if ns == "" {
		ns = "default"
	}
	return nsName{ns, name}
}

func (s *Sources) configMap(ns, name string) *corev1.ConfigMap {
	if s == nil {
		return nil
	}
	return s.configMaps[key(ns, name)]
}

func (s *Sources) secret(ns, name string) *secret {
	if s == nil {
		return nil
	}
	return s.secrets[key(ns, name)]
}

// String counts what s holds; it never prints content.
func (s *Sources) String() string {
	if s == nil {
		return "resolve.Sources{}"
	}
	return fmt.Sprintf("resolve.Sources{%d configMaps, %d secrets}", len(s.configMaps), len(s.secrets))
}

// GoString is String, so that %#v does not print Secret data.
func (s *Sources) GoString() string { return s.String() }

// String hides the Secret's data.
func (s *secret) String() string { return "secret{[redacted]}" }

// GoString hides the Secret's data from %#v.
func (s *secret) GoString() string { return s.String() }
