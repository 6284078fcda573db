package resolve

import (
	"encoding/json"
	"hash/fnv"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
)

// TemplateHash is the hash of a pod template as written, in the form of
// Kubernetes' pod-template-hash: FNV-32a over the template, written as a
// short string of the alphabet rand.SafeEncodeString uses (no vowels, so
// no words). Where Kubernetes hashes a debug dump of the Go value, this
// hashes its JSON encoding, which is canonical (map keys sorted,
// quantities in canonical form, empty fields left out), so the hash does
// not depend on how the YAML was written, only on what it says.
//
// Only what is written counts: the content of the ConfigMaps and Secrets
// the template refers to does not, so changing them rolls nothing out.
func TemplateHash(t *corev1.PodTemplateSpec) string {
	h := fnv.New32a()
	b, err := json.Marshal(t)
	if err != nil {
		// The API types always encode; should one ever not, the error
		// text still gives a stable hash of something.
		b = []byte(err.Error())
	}
	h.Write(b)
	return rand.SafeEncodeString(strconv.FormatUint(uint64(h.Sum32()), 10))
}

// PodHash is TemplateHash of a pod's labels, annotations and spec: the
// hash Pod gives a pod whose Input sets none.
func PodHash(labels, annotations map[string]string, spec *corev1.PodSpec) string {
	return TemplateHash(&corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
		Spec:       *spec,
	})
}
