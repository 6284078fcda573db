package resolve

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func cmKey(name, key string, optional *bool) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key, Optional: optional}}
}

func secretKey(name, key string, optional *bool) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key, Optional: optional}}
}

func field(path string) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}
}

func res(resourceName, divisor, container string) *corev1.EnvVarSource {
	s := &corev1.ResourceFieldSelector{Resource: resourceName, ContainerName: container}
	if divisor != "" {
		s.Divisor = resource.MustParse(divisor)
	}
	return &corev1.EnvVarSource{ResourceFieldRef: s}
}

func fromCM(name, prefix string, optional *bool) corev1.EnvFromSource {
	return corev1.EnvFromSource{Prefix: prefix, ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Optional: optional}}
}

func fromSecret(name, prefix string, optional *bool) corev1.EnvFromSource {
	return corev1.EnvFromSource{Prefix: prefix, SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Optional: optional}}
}

func TestEnv(t *testing.T) {
	withResources := func(c corev1.Container) corev1.Container {
		c.Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("100Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m")},
		}
		return c
	}
	tests := []struct {
		name string
		c    corev1.Container
		// want is what the container finally sees (after the agent's
		// expansion); absent names must not be set at all.
		want map[string]string
		// order, when set, is the wire order of names.
		order []string
		// errs are the expected errors, one each, in order.
		errs  []string
		warns []string
	}{
		{
			name: "literal values are kept",
			c:    corev1.Container{Env: []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "EMPTY"}, {Name: "B", Value: "two words"}}},
			want: map[string]string{"A": "1", "EMPTY": "", "B": "two words"},
		},
		{
			name: "configMapKeyRef and secretKeyRef",
			c: corev1.Container{Env: []corev1.EnvVar{
				{Name: "DB_HOST", ValueFrom: cmKey("app-config", "DATABASE_HOST", nil)},
				{Name: "DB_USER", ValueFrom: secretKey("db-creds", "username", nil)},
				{Name: "DB_PASSWORD", ValueFrom: secretKey("db-creds", "password", nil)},
			}},
			want: map[string]string{"DB_HOST": "postgres.production.svc", "DB_USER": "admin", "DB_PASSWORD": secretPassword},
		},
		{
			name: "optional references that are missing leave the variable out",
			c: corev1.Container{Env: []corev1.EnvVar{
				{Name: "A", ValueFrom: cmKey("nope", "k", ptr(true))},
				{Name: "B", ValueFrom: cmKey("app-config", "nope", ptr(true))},
				{Name: "C", ValueFrom: secretKey("nope", "k", ptr(true))},
				{Name: "D", ValueFrom: secretKey("db-creds", "nope", ptr(true))},
				{Name: "E", Value: "kept"},
			}},
			want: map[string]string{"E": "kept"},
		},
		{
			name: "missing references are errors naming pod, container, variable, object and key",
			c: corev1.Container{Env: []corev1.EnvVar{
				{Name: "A", ValueFrom: cmKey("nope", "k", nil)},
				{Name: "B", ValueFrom: cmKey("app-config", "nope", ptr(false))},
				{Name: "DB_PASSWORD", ValueFrom: secretKey("db-creds", "passwd", nil)},
				{Name: "D", ValueFrom: secretKey("gone", "k", nil)},
				{Name: "E", ValueFrom: cmKey("elsewhere", "k", nil)},
			}},
			errs: []string{
				"pod default/web-0: container web: env A: configMap nope: not found",
				"pod default/web-0: container web: env B: configMap app-config key nope: not found",
				"pod default/web-0: container web: env DB_PASSWORD: secret db-creds key passwd: not found",
				"pod default/web-0: container web: env D: secret gone: not found",
				"pod default/web-0: container web: env E: configMap elsewhere: not found",
			},
		},
		{
			name: "fieldRefs",
			c: corev1.Container{Env: []corev1.EnvVar{
				{Name: "NAME", ValueFrom: field("metadata.name")},
				{Name: "NS", ValueFrom: field("metadata.namespace")},
				{Name: "UID", ValueFrom: field("metadata.uid")},
				{Name: "APP", ValueFrom: field("metadata.labels['app']")},
				{Name: "NOLABEL", ValueFrom: field("metadata.labels['none']")},
				{Name: "NOTE", ValueFrom: field("metadata.annotations['Example.COM/Note']")},
				{Name: "NODE", ValueFrom: field("spec.nodeName")},
				{Name: "SA", ValueFrom: field("spec.serviceAccountName")},
				{Name: "HOST_IP", ValueFrom: field("status.hostIP")},
				{Name: "HOST_IPS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIPs"}}},
			}},
			want: map[string]string{
				"NAME": "web-0", "NS": "default", "UID": "uid-1234", "APP": "web", "NOLABEL": "", "NOTE": `x"y`,
				"NODE": "node1", "SA": "default", "HOST_IP": "198.18.0.11", "HOST_IPS": "198.18.0.11,fd00::11",
			},
		},
		{
			name: "fieldRefs Kubernetes refuses in env",
			c: corev1.Container{Env: []corev1.EnvVar{
				{Name: "A", ValueFrom: field("metadata.labels")},
				{Name: "B", ValueFrom: field("spec.containers")},
				{Name: "C", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v2", FieldPath: "metadata.name"}}},
				{Name: "D", ValueFrom: field("metadata.labels['bad key!']")},
				{Name: "E", ValueFrom: field("metadata.name['x']")},
			}},
			errs: []string{
				"pod default/web-0: container web: env A: fieldRef metadata.labels: only a single key (metadata.labels['key']) in env: not supported",
				"pod default/web-0: container web: env B: fieldRef spec.containers: not supported",
				"pod default/web-0: container web: env C: fieldRef metadata.name: apiVersion v2: only v1: not supported",
				"pod default/web-0: container web: env D: fieldRef metadata.labels['bad key!']: ",
				"pod default/web-0: container web: env E: fieldRef metadata.name['x']: metadata.name takes no subscript: invalid",
			},
		},
		{
			name: "pod IPs stay for the agent, and references to them stay references",
			c: corev1.Container{Env: []corev1.EnvVar{
				{Name: "BEFORE", Value: "$(POD_IP)"},
				{Name: "POD_IP", ValueFrom: field("status.podIP")},
				{Name: "POD_IPS", ValueFrom: field("status.podIPs")},
				{Name: "URL", Value: "http://$(POD_IP):8080/$$(POD_IP)"},
				{Name: "AGAIN", Value: "[$(URL)]"},
			}},
			want: map[string]string{
				"BEFORE": "$(POD_IP)", "POD_IP": "10.1.0.7", "POD_IPS": "10.1.0.7,fd10::7",
				"URL": "http://10.1.0.7:8080/$(POD_IP)", "AGAIN": "[http://10.1.0.7:8080/$(POD_IP)]",
			},
		},
		{
			name: "resourceFieldRefs",
			c: withResources(corev1.Container{Env: []corev1.EnvVar{
				{Name: "CPU_LIMIT", ValueFrom: res("limits.cpu", "", "")},
				{Name: "CPU_LIMIT_M", ValueFrom: res("limits.cpu", "1m", "")},
				{Name: "CPU_REQUEST", ValueFrom: res("requests.cpu", "", "")},
				{Name: "CPU_REQUEST_M", ValueFrom: res("requests.cpu", "1m", "")},
				{Name: "MEM_REQUEST", ValueFrom: res("requests.memory", "", "")},
				{Name: "MEM_REQUEST_MI", ValueFrom: res("requests.memory", "1Mi", "")},
				{Name: "MEM_REQUEST_M", ValueFrom: res("requests.memory", "1M", "")},
				{Name: "MEM_LIMIT_GI", ValueFrom: res("limits.memory", "1Gi", "")},
				{Name: "STORAGE_LIMIT", ValueFrom: res("limits.ephemeral-storage", "1Gi", "")},
				{Name: "STORAGE_REQUEST", ValueFrom: res("requests.ephemeral-storage", "", "")},
				{Name: "SIDE_CPU", ValueFrom: res("limits.cpu", "1m", "side")},
				{Name: "SIDE_MEM", ValueFrom: res("requests.memory", "1Mi", "side")},
			}}),
			want: map[string]string{
				"CPU_LIMIT": "2", "CPU_LIMIT_M": "1500", "CPU_REQUEST": "1", "CPU_REQUEST_M": "250",
				"MEM_REQUEST": "104857600", "MEM_REQUEST_MI": "100", "MEM_REQUEST_M": "105",
				"MEM_LIMIT_GI": "8", "STORAGE_LIMIT": "100", "STORAGE_REQUEST": "0",
				"SIDE_CPU": "500", "SIDE_MEM": "64",
			},
		},
		{
			name: "resourceFieldRefs Kubernetes refuses",
			c: corev1.Container{Env: []corev1.EnvVar{
				{Name: "A", ValueFrom: res("limits.cpu", "1Mi", "")},
				{Name: "B", ValueFrom: res("requests.memory", "3", "")},
				{Name: "C", ValueFrom: res("limits.gpu", "", "")},
				{Name: "D", ValueFrom: res("limits.cpu", "", "nosuch")},
			}},
			errs: []string{
				"pod default/web-0: container web: env A: resourceFieldRef limits.cpu: divisor 1Mi: invalid",
				"pod default/web-0: container web: env B: resourceFieldRef requests.memory: divisor 3: invalid",
				"pod default/web-0: container web: env C: resourceFieldRef limits.gpu: not supported",
				"pod default/web-0: container web: env D: resourceFieldRef: container nosuch: invalid",
			},
		},
		{
			name: "envFrom with prefix; env wins; later envFrom wins; order as built",
			c: corev1.Container{
				EnvFrom: []corev1.EnvFromSource{fromCM("app-config", "", nil), fromCM("overrides", "", nil), fromSecret("api-token", "API_", nil)},
				Env:     []corev1.EnvVar{{Name: "DATABASE_PORT", Value: "6432"}, {Name: "Z", Value: "last"}},
			},
			want: map[string]string{
				"1-starts-num": "ok", "DATABASE_HOST": "postgres.production.svc", "DATABASE_PORT": "6432",
				"LOG_LEVEL": "debug", "nginx.conf": "server { listen 80; }\n", "price": "$5 $(LOG_LEVEL)",
				"EXTRA": "1", "API_token": secretToken, "Z": "last",
			},
			order: []string{"1-starts-num", "DATABASE_HOST", "DATABASE_PORT", "LOG_LEVEL", "nginx.conf", "price", "EXTRA", "API_token", "Z"},
		},
		{
			name: "envFrom optional and missing",
			c: corev1.Container{EnvFrom: []corev1.EnvFromSource{
				fromCM("nope", "", ptr(true)), fromSecret("nope", "", ptr(true)), fromCM("gone", "", nil), fromSecret("gone", "S_", ptr(false)),
			}},
			want: map[string]string{},
			errs: []string{
				"pod default/web-0: container web: envFrom[2]: configMap gone: not found",
				"pod default/web-0: container web: envFrom[3]: secret gone: not found",
			},
		},
		{
			name: "envFrom keys that make invalid names are skipped with a warning",
			c:    corev1.Container{EnvFrom: []corev1.EnvFromSource{fromCM("overrides", "X=", nil)}},
			want: map[string]string{},
			warns: []string{
				`pod default/web-0: container web: envFrom[0]: configMap overrides: keys "X=EXTRA", "X=LOG_LEVEL" skipped: not valid environment variable names`,
			},
		},
		{
			name: "expansion as Kubernetes does it",
			c: corev1.Container{
				EnvFrom: []corev1.EnvFromSource{fromCM("overrides", "", nil)},
				Env: []corev1.EnvVar{
					{Name: "LEVEL", Value: "lvl=$(LOG_LEVEL)"},                      // from envFrom
					{Name: "LATER", Value: "$(DEFINED_LATER)"},                      // not yet defined: as written
					{Name: "DEFINED_LATER", Value: "x"},                             //
					{Name: "ESCAPED", Value: "$$(LOG_LEVEL) $$ $"},                  // $$ is a literal $
					{Name: "ODD", Value: "a$b $(unclosed"},                          // a $ that starts nothing
					{Name: "CHAIN", Value: "<$(LEVEL)|$(ESCAPED)>"},                 // values, not their source
					{Name: "PW", ValueFrom: secretKey("db-creds", "password", nil)}, // never expanded
					{Name: "USE_PW", Value: "$(PW)"},                                // but referable
					{Name: "PRICE", ValueFrom: cmKey("app-config", "price", nil)},
				},
			},
			want: map[string]string{
				"LOG_LEVEL": "debug", "EXTRA": "1",
				"LEVEL": "lvl=debug", "LATER": "$(DEFINED_LATER)", "DEFINED_LATER": "x",
				"ESCAPED": "$(LOG_LEVEL) $ $", "ODD": "a$b $(unclosed",
				"CHAIN": "<lvl=debug|$(LOG_LEVEL) $ $>", "PW": secretPassword, "USE_PW": secretPassword,
				"PRICE": "$5 $(LOG_LEVEL)",
			},
		},
		{
			name: "an override seen by references before and after it",
			c: corev1.Container{
				EnvFrom: []corev1.EnvFromSource{fromCM("overrides", "", nil)},
				Env: []corev1.EnvVar{
					{Name: "BEFORE", Value: "$(LOG_LEVEL)"},
					{Name: "LOG_LEVEL", Value: "warn"},
					{Name: "AFTER", Value: "$(LOG_LEVEL)"},
					{Name: "EXTRA", ValueFrom: cmKey("nope", "k", ptr(true))}, // missing: envFrom's stays
				},
			},
			want:  map[string]string{"EXTRA": "1", "LOG_LEVEL": "warn", "BEFORE": "debug", "AFTER": "warn"},
			order: []string{"EXTRA", "LOG_LEVEL", "BEFORE", "AFTER"},
		},
		{
			name: "an override that refers to a pod IP goes after it",
			c: corev1.Container{
				EnvFrom: []corev1.EnvFromSource{fromCM("overrides", "", nil)},
				Env: []corev1.EnvVar{
					{Name: "POD_IP", ValueFrom: field("status.podIP")},
					{Name: "LOG_LEVEL", Value: "ip=$(POD_IP)"},
					{Name: "EXTRA", Value: "[$(LOG_LEVEL)]"},
				},
			},
			want:  map[string]string{"POD_IP": "10.1.0.7", "LOG_LEVEL": "ip=10.1.0.7", "EXTRA": "[ip=10.1.0.7]"},
			order: []string{"POD_IP", "LOG_LEVEL", "EXTRA"},
		},
		{
			name: "a pod IP variable redefined after a value refers to it",
			c: corev1.Container{Env: []corev1.EnvVar{
				{Name: "POD_IP", ValueFrom: field("status.podIP")},
				{Name: "URL", Value: "http://$(POD_IP)"},
				{Name: "POD_IP", ValueFrom: field("status.podIP")}, // the same: fine
				{Name: "POD_IP", Value: "other"},
			}},
			errs: []string{"pod default/web-0: container web: env POD_IP: redefines POD_IP, which values before refer to as the pod's status.podIP: not supported"},
		},
		{
			name: "fileKeyRef is not supported",
			c:    corev1.Container{Env: []corev1.EnvVar{{Name: "F", ValueFrom: &corev1.EnvVarSource{FileKeyRef: &corev1.FileKeySelector{VolumeName: "v", Path: "p", Key: "k"}}}}},
			errs: []string{"pod default/web-0: container web: env F: fileKeyRef: not supported"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := oneContainer(tc.c)
			spec.Containers = append(spec.Containers, corev1.Container{Name: "side", Image: "example/side:1", Resources: corev1.ResourceRequirements{
				Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("0.5"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			}})
			res, err := Pod(testInput(spec))
			got := errorLines(err)
			if len(got) != len(tc.errs) {
				t.Errorf("got %d errors, want %d:\n%s", len(got), len(tc.errs), strings.Join(got, "\n"))
			}
			for i := range min(len(got), len(tc.errs)) {
				if !strings.HasPrefix(got[i], tc.errs[i]) {
					t.Errorf("error %d:\n got %s\nwant %s", i, got[i], tc.errs[i])
				}
			}
			if err != nil {
				checkNoSecret(t, "error", err.Error())
			}
			if !slices.Equal(res.Warnings, tc.warns) {
				t.Errorf("warnings:\n got %q\nwant %q", res.Warnings, tc.warns)
			}
			if tc.want == nil {
				return
			}
			c := res.Pod.Spec.Containers[0]
			if c.EnvFrom != nil {
				t.Errorf("envFrom is left on the wire")
			}
			fill := map[string]string{"POD_IP": "10.1.0.7", "POD_IPS": "10.1.0.7,fd10::7"}
			final := agentEnv(c.Env, fill)
			for k, want := range tc.want {
				if g, ok := final[k]; !ok {
					t.Errorf("%s is not set", k)
				} else if g != want {
					if strings.Contains(want, secretPassword) || strings.Contains(want, secretToken) {
						t.Errorf("%s has the wrong value (a secret: not printed)", k)
					} else {
						t.Errorf("%s = %q, want %q", k, g, want)
					}
				}
			}
			for k := range final {
				if _, ok := tc.want[k]; !ok {
					t.Errorf("%s is set but should not be", k)
				}
			}
			var names []string
			for _, e := range c.Env {
				names = append(names, e.Name)
				if e.ValueFrom != nil && (e.ValueFrom.FieldRef == nil || !strings.HasPrefix(e.ValueFrom.FieldRef.FieldPath, "status.podIP")) {
					t.Errorf("%s keeps a valueFrom other than a pod IP fieldRef", e.Name)
				}
			}
			if len(names) != len(final) {
				t.Errorf("duplicate names on the wire: %q", names)
			}
			if tc.order != nil && !slices.Equal(names, tc.order) {
				t.Errorf("order:\n got %q\nwant %q", names, tc.order)
			}
		})
	}
}

func TestEnvSentinels(t *testing.T) {
	spec := oneContainer(corev1.Container{Env: []corev1.EnvVar{
		{Name: "A", ValueFrom: cmKey("nope", "k", nil)},
		{Name: "B", ValueFrom: field("status.phase")},
		{Name: "C", ValueFrom: res("limits.cpu", "7", "")},
	}})
	_, err := Pod(testInput(spec))
	for _, want := range []error{ErrMissingReference, ErrNotSupported, ErrInvalid} {
		if !errors.Is(err, want) {
			t.Errorf("errors.Is(err, %v) = false", want)
		}
	}
}

func TestEnvNoHostAddress(t *testing.T) {
	in := testInput(oneContainer(corev1.Container{Env: []corev1.EnvVar{{Name: "H", ValueFrom: field("status.hostIP")}}}))
	in.Machine.Addresses = nil
	_, err := Pod(in)
	if want := "pod default/web-0: container web: env H: fieldRef status.hostIP: machine node1 has no address: invalid"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}

// TestEnvServiceAccount: the named account, else "default", which
// Kubernetes' admission would fill in.
func TestEnvServiceAccount(t *testing.T) {
	spec := oneContainer(corev1.Container{Env: []corev1.EnvVar{{Name: "SA", ValueFrom: field("spec.serviceAccountName")}}})
	spec.ServiceAccountName = "web-sa"
	res := mustResolve(t, testInput(spec))
	if got := agentEnv(res.Pod.Spec.Containers[0].Env, nil)["SA"]; got != "web-sa" {
		t.Errorf("SA = %q, want web-sa", got)
	}
}

// TestEnvInitContainers: init containers are resolved too, and named as
// such in errors.
func TestEnvInitContainers(t *testing.T) {
	spec := oneContainer(corev1.Container{})
	spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "example/migrate:1", Env: []corev1.EnvVar{
		{Name: "PW", ValueFrom: secretKey("db-creds", "password", nil)},
		{Name: "X", ValueFrom: secretKey("db-creds", "nope", nil)},
	}}}
	res, err := Pod(testInput(spec))
	if want := "pod default/web-0: init container migrate: env X: secret db-creds key nope: not found"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
	if got := agentEnv(res.Pod.Spec.InitContainers[0].Env, nil); got["PW"] != secretPassword {
		t.Errorf("init container's PW is not the secret's value")
	}
}

// TestEnvDoesNotTouchInput: the spec given is left as it was.
func TestEnvDoesNotTouchInput(t *testing.T) {
	c := corev1.Container{
		EnvFrom: []corev1.EnvFromSource{fromCM("overrides", "", nil)},
		Env:     []corev1.EnvVar{{Name: "PW", ValueFrom: secretKey("db-creds", "password", nil)}},
	}
	spec := oneContainer(c)
	before := spec.DeepCopy()
	in := testInput(spec)
	labels := maps.Clone(in.Labels)
	res := mustResolve(t, in)
	res.Pod.Labels["mutated"] = "yes"
	if !equalJSON(t, before, spec) {
		t.Error("Pod changed its input spec")
	}
	if !maps.Equal(labels, in.Labels) {
		t.Error("the result shares the input's labels")
	}
}

// TestEnvHugePages: hugepages limits are not defaulted from allocatable
// (they are never overcommitted), and requests default to them.
func TestEnvHugePages(t *testing.T) {
	c := corev1.Container{
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"hugepages-2Mi": resource.MustParse("8Mi")}},
		Env: []corev1.EnvVar{
			{Name: "REQ", ValueFrom: res("requests.hugepages-2Mi", "1Mi", "")},
			{Name: "LIM", ValueFrom: res("limits.hugepages-2Mi", "", "")},
			{Name: "NONE", ValueFrom: res("limits.hugepages-1Gi", "1Gi", "")},
		},
	}
	in := testInput(oneContainer(c))
	in.Machine.Allocatable["hugepages-1Gi"] = resource.MustParse("4Gi")
	got := agentEnv(mustResolve(t, in).Pod.Spec.Containers[0].Env, nil)
	if got["REQ"] != "8" || got["LIM"] != "8388608" || got["NONE"] != "0" {
		t.Errorf("env %v, want REQ 8, LIM 8388608, NONE 0", got)
	}
}

// TestEnvOddNames: names that need it are quoted in messages.
func TestEnvOddNames(t *testing.T) {
	_, err := Pod(testInput(oneContainer(corev1.Container{Env: []corev1.EnvVar{{Name: "my var", ValueFrom: cmKey("", "k", nil)}}})))
	if want := `pod default/web-0: container web: env "my var": configMap "": not found`; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}
