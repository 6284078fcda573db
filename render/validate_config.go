package render

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// dataMaxSize is the most a ConfigMap or Secret may hold, as in
// Kubernetes (etcd's object size limit).
const dataMaxSize = 1 << 20

func (c *checker) configMap(cm *corev1.ConfigMap) {
	size := 0
	for _, k := range sortedKeys(cm.Data) {
		c.invalid("data["+k+"]", "key", k, validation.IsConfigMapKey(k))
		size += len(k) + len(cm.Data[k])
	}
	for _, k := range sortedKeys(cm.BinaryData) {
		p := "binaryData[" + k + "]"
		if !c.invalid(p, "key", k, validation.IsConfigMapKey(k)) {
			if _, dup := cm.Data[k]; dup {
				c.errorf(p, "key %q is in both data and binaryData", k)
			}
		}
		size += len(k) + len(cm.BinaryData[k])
	}
	if size > dataMaxSize {
		c.errorf("data", "the ConfigMap holds %d bytes, over the limit of %d", size, dataMaxSize)
	}
}

// Keys a Secret of a built-in type must have.
var secretRequiredKeys = map[corev1.SecretType][]string{
	corev1.SecretTypeTLS:              {corev1.TLSCertKey, corev1.TLSPrivateKeyKey},
	corev1.SecretTypeDockerConfigJson: {corev1.DockerConfigJsonKey},
	corev1.SecretTypeDockercfg:        {corev1.DockerConfigKey},
	corev1.SecretTypeSSHAuth:          {corev1.SSHAuthPrivateKey},
}

func (c *checker) secret(s *corev1.Secret) {
	size := 0
	for _, k := range sortedKeys(s.Data) {
		c.invalid("data["+k+"]", "key", k, validation.IsConfigMapKey(k))
		size += len(k) + len(s.Data[k])
	}
	for _, k := range sortedKeys(s.StringData) {
		c.invalid("stringData["+k+"]", "key", k, validation.IsConfigMapKey(k))
		size += len(k) + len(s.StringData[k])
	}
	if size > dataMaxSize {
		c.errorf("data", "the Secret holds %d bytes, over the limit of %d", size, dataMaxSize)
	}
	has := func(k string) bool {
		_, a := s.Data[k]
		_, b := s.StringData[k]
		return a || b
	}
	var missing []string
	for _, k := range secretRequiredKeys[s.Type] {
		if !has(k) {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		c.errorf("type", "a Secret of type %s needs the keys %s in data or stringData: %s missing", s.Type, quoted(secretRequiredKeys[s.Type]), quoted(missing))
	}
	switch s.Type {
	case corev1.SecretTypeBasicAuth:
		if !has(corev1.BasicAuthUsernameKey) && !has(corev1.BasicAuthPasswordKey) {
			c.errorf("type", "a Secret of type %s needs a %q or %q key", s.Type, corev1.BasicAuthUsernameKey, corev1.BasicAuthPasswordKey)
		}
	case corev1.SecretTypeDockerConfigJson:
		const k = corev1.DockerConfigJsonKey
		if v, ok := s.Data[k]; ok && !json.Valid(v) {
			c.errorf("data["+k+"]", "%s is not valid JSON", k)
		}
		if v, ok := s.StringData[k]; ok && !json.Valid([]byte(v)) {
			c.errorf("stringData["+k+"]", "%s is not valid JSON", k)
		}
	}
}

func (c *checker) storageClass(sc *storagev1.StorageClass) {
	if sc.Provisioner == "" {
		c.errorf("provisioner", "a provisioner is required")
	}
	if p := sc.ReclaimPolicy; p != nil {
		oneOf(c, "reclaimPolicy", *p, corev1.PersistentVolumeReclaimDelete, corev1.PersistentVolumeReclaimRetain)
	}
	if m := sc.VolumeBindingMode; m != nil {
		oneOf(c, "volumeBindingMode", *m, storagev1.VolumeBindingImmediate, storagev1.VolumeBindingWaitForFirstConsumer)
	}
}

// roleBinding checks a RoleBinding (namespaced) or ClusterRoleBinding:
// the role it grants must exist, and the ServiceAccounts it names should.
func (c *checker) roleBinding(ref rbacv1.RoleRef, subjects []rbacv1.Subject, namespaced bool) {
	if ref.APIGroup != rbacv1.GroupName {
		c.errorf("roleRef.apiGroup", "roleRef.apiGroup must be %s", rbacv1.GroupName)
	}
	switch {
	case ref.Name == "":
		c.errorf("roleRef.name", "the name of the role is required")
	case ref.Kind == "ClusterRole":
		if !implicitClusterRoles[ref.Name] && c.v.d.Get(Key{Group: rbacv1.GroupName, Kind: "ClusterRole", Name: ref.Name}) == nil {
			c.errorf("roleRef.name", "ClusterRole %q not found", ref.Name)
		}
	case ref.Kind == "Role" && namespaced:
		if c.get(rbacv1.GroupName, "Role", ref.Name) == nil {
			c.errorf("roleRef.name", "Role %q not found in namespace %s", ref.Name, c.o.Namespace)
		}
	case ref.Kind == "Role":
		c.errorf("roleRef.kind", "a ClusterRoleBinding can only grant a ClusterRole")
	default:
		c.errorf("roleRef.kind", "unknown value %q: use Role or ClusterRole", ref.Kind)
	}
	for i, s := range subjects {
		p := fmt.Sprintf("subjects[%d]", i)
		if s.Name == "" {
			c.errorf(p+".name", "a subject name is required")
			continue
		}
		switch s.Kind {
		case rbacv1.ServiceAccountKind:
			if s.APIGroup != "" {
				c.errorf(p+".apiGroup", "apiGroup must be empty for a ServiceAccount")
			}
			ns := s.Namespace
			if ns == "" && namespaced {
				ns = c.o.Namespace
			}
			if ns == "" {
				c.errorf(p+".namespace", "the namespace of the ServiceAccount is required")
				continue
			}
			if s.Name == defaultServiceAccount && (implicitNamespaces[ns] || c.v.d.Get(Key{Kind: "Namespace", Name: ns}) != nil) {
				continue
			}
			if c.v.d.Get(Key{Kind: "ServiceAccount", Namespace: ns, Name: s.Name}) == nil {
				c.warnf(p, "ServiceAccount %s/%s is not declared: the binding grants it nothing until it is", ns, s.Name)
			}
		case rbacv1.UserKind, rbacv1.GroupKind:
			if s.APIGroup != rbacv1.GroupName {
				c.errorf(p+".apiGroup", "apiGroup must be %s for a %s", rbacv1.GroupName, s.Kind)
			}
		default:
			c.errorf(p+".kind", "unknown value %q: use ServiceAccount, User or Group", s.Kind)
		}
	}
}
