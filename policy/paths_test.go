package policy

import "testing"

func TestCommonAncestor(t *testing.T) {
	tests := []struct{ a, b, want string }{
		{"spec.containers[0].securityContext.privileged", "spec.containers[0].securityContext.privileged", "spec.containers[0].securityContext.privileged"},
		{"spec.containers[0].securityContext.privileged", "spec.containers[0].securityContext.capabilities", "spec.containers[0].securityContext"},
		{"spec.containers[0].securityContext", "spec.containers[1].securityContext", "spec.containers"},
		{"spec.containers[1]", "spec.containers[10]", "spec.containers"},
		{"spec.securityContext.runAsNonRoot", "spec.containers[0].image", "spec"},
		{"spec.template.spec", "spec.template.spec.volumes[0]", "spec.template.spec"},
		{"spec.templateX", "spec.template", "spec"},
		{"metadata", "spec", ""},
	}
	for _, tt := range tests {
		if got := commonAncestor(tt.a, tt.b); got != tt.want {
			t.Errorf("commonAncestor(%q, %q) = %q, want %q", tt.a, tt.b, got, tt.want)
		}
		if got := commonAncestor(tt.b, tt.a); got != tt.want {
			t.Errorf("commonAncestor(%q, %q) = %q, want %q", tt.b, tt.a, got, tt.want)
		}
	}
}
