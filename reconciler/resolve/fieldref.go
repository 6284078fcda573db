package resolve

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// envField resolves a fieldRef of an env var. deferred is true for the
// pod's own addresses, which only the agent knows.
func (r *resolver) envField(f *corev1.ObjectFieldSelector) (v string, deferred bool, err error) {
	if err := checkAPIVersion(f); err != nil {
		return "", false, err
	}
	switch f.FieldPath {
	case "spec.nodeName":
		return r.in.Machine.Name, false, nil
	case "spec.serviceAccountName":
		return serviceAccount(r.in.Spec), false, nil
	case "status.hostIP", "status.hostIPs":
		addrs := r.in.Machine.Addresses
		if len(addrs) == 0 {
			return "", false, fmt.Errorf("fieldRef %s: machine %s has no address: %w", f.FieldPath, quoteName(r.in.Machine.Name), ErrInvalid)
		}
		if f.FieldPath == "status.hostIP" {
			return addrs[0], false, nil
		}
		return strings.Join(addrs, ","), false, nil
	case "status.podIP", "status.podIPs":
		return "", true, nil
	case "metadata.labels", "metadata.annotations":
		// Whole maps only in downwardAPI volumes, as Kubernetes validates.
		return "", false, fmt.Errorf("fieldRef %s: only a single key (%s['key']) in env: %w", f.FieldPath, f.FieldPath, ErrNotSupported)
	}
	v, err = r.metadataField(f.FieldPath)
	return v, false, err
}

// volumeField resolves a fieldRef of a downwardAPI volume item, which
// may name only metadata.
func (r *resolver) volumeField(f *corev1.ObjectFieldSelector) (string, error) {
	if err := checkAPIVersion(f); err != nil {
		return "", err
	}
	switch f.FieldPath {
	case "metadata.labels":
		return formatMap(r.in.Labels), nil
	case "metadata.annotations":
		return formatMap(r.in.Annotations), nil
	}
	return r.metadataField(f.FieldPath)
}

// metadataField is the part of the downward API that env vars and
// volumes share: name, namespace, uid, and one label or annotation.
func (r *resolver) metadataField(path string) (string, error) {
	if p, sub, ok := splitSubscript(path); ok {
		switch p {
		case "metadata.labels":
			if errs := validation.IsQualifiedName(sub); len(errs) > 0 {
				return "", fmt.Errorf("fieldRef %s: %s: %w", path, errs[0], ErrInvalid)
			}
			return r.in.Labels[sub], nil
		case "metadata.annotations":
			if errs := validation.IsQualifiedName(strings.ToLower(sub)); len(errs) > 0 {
				return "", fmt.Errorf("fieldRef %s: %s: %w", path, errs[0], ErrInvalid)
			}
			return r.in.Annotations[sub], nil
		}
		return "", fmt.Errorf("fieldRef %s: %s takes no subscript: %w", path, p, ErrInvalid)
	}
	switch path {
	case "metadata.name":
		return r.in.Name, nil
	case "metadata.namespace":
		return r.ns, nil
	case "metadata.uid":
		return r.in.UID, nil
	}
	return "", fmt.Errorf("fieldRef %s: %w", quoteName(path), ErrNotSupported)
}

func checkAPIVersion(f *corev1.ObjectFieldSelector) error {
	if f.APIVersion != "" && f.APIVersion != "v1" {
		return fmt.Errorf("fieldRef %s: apiVersion %s: only v1: %w", f.FieldPath, quoteName(f.APIVersion), ErrNotSupported)
	}
	return nil
}

// serviceAccount is the pod's service account: the one named, or
// "default", which Kubernetes' admission fills in.
func serviceAccount(s *corev1.PodSpec) string {
	switch {
	case s == nil:
		return "default"
	case s.ServiceAccountName != "":
		return s.ServiceAccountName
	case s.DeprecatedServiceAccount != "":
		return s.DeprecatedServiceAccount
	}
	return "default"
}

// splitSubscript splits "metadata.labels['app']" into "metadata.labels"
// and "app".
func splitSubscript(path string) (string, string, bool) {
	s, ok := strings.CutSuffix(path, "']")
	if !ok {
		return path, "", false
	}
	p, sub, ok := strings.Cut(s, "['")
	if !ok || p == "" {
		return path, "", false
	}
	return p, sub, true
}

// formatMap is the downward API's file form of labels and annotations:
// key="value" lines, sorted by key, values quoted as Go does.
func formatMap(m map[string]string) string {
	var b strings.Builder
	for i, k := range sortedKeys(m) {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(m[k]))
	}
	return b.String()
}

// resourceValue is a resourceFieldRef's value for container c, as the
// kubelet computes it: unset cpu, memory and ephemeral-storage limits
// stand for the machine's allocatable, unset requests default to the
// limits written, and the value is divided by the divisor, rounding up.
func (r *resolver) resourceValue(ref *corev1.ResourceFieldSelector, c *corev1.Container) (string, error) {
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("resourceFieldRef %s: %w", quoteName(ref.Resource), ErrNotSupported)
	}
	rn := corev1.ResourceName(name)
	cpu := rn == corev1.ResourceCPU
	switch {
	case cpu, rn == corev1.ResourceMemory, rn == corev1.ResourceEphemeralStorage:
	case strings.HasPrefix(name, corev1.ResourceHugePagesPrefix):
	default:
		return "", fmt.Errorf("resourceFieldRef %s: %w", quoteName(ref.Resource), ErrNotSupported)
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = *resource.NewQuantity(1, resource.DecimalSI)
	}
	if !validDivisor(divisor, cpu) {
		return "", fmt.Errorf("resourceFieldRef %s: divisor %s: %w", ref.Resource, divisor.String(), ErrInvalid)
	}

	limit, hasLimit := c.Resources.Limits[rn]
	var q resource.Quantity
	if kind == "requests" {
		q, ok = c.Resources.Requests[rn]
		if !ok && hasLimit {
			q = limit
		}
	} else {
		q = limit
		huge := strings.HasPrefix(name, corev1.ResourceHugePagesPrefix)
		if (!hasLimit || limit.IsZero()) && !huge {
			q = r.in.Machine.Allocatable[rn]
		}
	}
	var n, d int64
	if cpu {
		n, d = q.MilliValue(), divisor.MilliValue()
	} else {
		n, d = q.Value(), divisor.Value()
	}
	return strconv.FormatInt(ceilDiv(n, d), 10), nil
}

// validDivisor: 1m or 1 for cpu; 1 or a power of 1000 or 1024 up to E or
// Ei for memory, storage and hugepages, as Kubernetes validates.
func validDivisor(q resource.Quantity, cpu bool) bool {
	var ok []string
	if cpu {
		ok = []string{"1m", "1"}
	} else {
		ok = []string{"1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei"}
	}
	for _, s := range ok {
		if v, err := resource.ParseQuantity(s); err == nil && q.Cmp(v) == 0 {
			return true
		}
	}
	return false
}

// ceilDiv divides, rounding up, for n >= 0 and d > 0.
func ceilDiv(n, d int64) int64 {
	if n <= 0 {
		return n / d
	}
	return (n-1)/d + 1
}
