package resolve

import (
	"encoding/json"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
)

// dockerConfigJSON returns the .dockerconfigjson document of an image
// pull Secret: its own for type kubernetes.io/dockerconfigjson, or a
// legacy kubernetes.io/dockercfg one wrapped as {"auths": ...}. Errors
// never quote the content.
func dockerConfigJSON(s *secret) (api.Sensitive, error) {
	switch s.typ {
	case corev1.SecretTypeDockerConfigJson:
		b, ok := s.data[corev1.DockerConfigJsonKey]
		if !ok || len(b) == 0 {
			return nil, fmt.Errorf("key %s is missing or empty", corev1.DockerConfigJsonKey)
		}
		var doc struct {
			Auths map[string]json.RawMessage `json:"auths"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, errors.New("key " + corev1.DockerConfigJsonKey + " is not a JSON object")
		}
		return api.Sensitive(b), nil
	case corev1.SecretTypeDockercfg:
		b, ok := s.data[corev1.DockerConfigKey]
		if !ok || len(b) == 0 {
			return nil, fmt.Errorf("key %s is missing or empty", corev1.DockerConfigKey)
		}
		var auths map[string]json.RawMessage
		if err := json.Unmarshal(b, &auths); err != nil {
			return nil, errors.New("key " + corev1.DockerConfigKey + " is not a JSON object")
		}
		out, err := json.Marshal(map[string]map[string]json.RawMessage{"auths": auths})
		if err != nil {
			return nil, errors.New("key " + corev1.DockerConfigKey + " cannot be converted")
		}
		return api.Sensitive(out), nil
	}
	return nil, fmt.Errorf("type %s is not %s or %s", s.typ, corev1.SecretTypeDockerConfigJson, corev1.SecretTypeDockercfg)
}
