package render

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

func (c *checker) nonNegative(p string, v *int32) {
	if v != nil && *v < 0 {
		c.errorf(p, "%d must not be negative", *v)
	}
}

func (c *checker) deployment(d *appsv1.Deployment) {
	s := &d.Spec
	c.nonNegative("spec.replicas", s.Replicas)
	c.nonNegative("spec.minReadySeconds", &s.MinReadySeconds)
	c.podSelector("spec.selector", s.Selector, s.Template.Labels, "spec.template.metadata.labels")
	c.template(&s.Template, "spec.template", podContext{restartPolicies: serviceRestartPolicies})
	switch s.Strategy.Type {
	case appsv1.RecreateDeploymentStrategyType:
		if s.Strategy.RollingUpdate != nil {
			c.errorf("spec.strategy.rollingUpdate", "rollingUpdate must not be set when the strategy type is Recreate")
		}
	case appsv1.RollingUpdateDeploymentStrategyType:
		if ru := s.Strategy.RollingUpdate; ru != nil {
			c.rollingUpdate("spec.strategy.rollingUpdate", ru.MaxSurge, ru.MaxUnavailable)
		}
	default:
		oneOf(c, "spec.strategy.type", s.Strategy.Type, appsv1.RollingUpdateDeploymentStrategyType, appsv1.RecreateDeploymentStrategyType)
	}
	if pd := s.ProgressDeadlineSeconds; pd != nil && *pd <= s.MinReadySeconds {
		c.errorf("spec.progressDeadlineSeconds", "progressDeadlineSeconds (%d) must be more than minReadySeconds (%d)", *pd, s.MinReadySeconds)
	}
}

// rollingUpdate checks maxSurge and maxUnavailable: each a count or a
// percentage, and not both zero, or a rollout could never replace a pod.
func (c *checker) rollingUpdate(p string, surge, unavailable *intstr.IntOrString) {
	okS := c.intOrPercent(p+".maxSurge", surge, false)
	okU := c.intOrPercent(p+".maxUnavailable", unavailable, true)
	if okS && okU && isZero(surge) && isZero(unavailable) {
		c.errorf(p, "maxSurge and maxUnavailable cannot both be 0: a rollout could never replace a pod")
	}
}

func (c *checker) intOrPercent(p string, v *intstr.IntOrString, atMost100 bool) bool {
	if v == nil {
		return true
	}
	if v.Type == intstr.Int {
		if v.IntVal < 0 {
			c.errorf(p, "%d must not be negative", v.IntVal)
			return false
		}
		return true
	}
	if msgs := validation.IsValidPercent(v.StrVal); len(msgs) > 0 {
		c.errorf(p, "invalid value %q: a count (1) or a percentage (25%%)", v.StrVal)
		return false
	}
	if atMost100 {
		if n, _ := intstr.GetScaledValueFromIntOrPercent(v, 100, false); n > 100 {
			c.errorf(p, "%s must not be more than 100%%", v.StrVal)
			return false
		}
	}
	return true
}

func isZero(v *intstr.IntOrString) bool {
	if v == nil {
		return true
	}
	if v.Type == intstr.Int {
		return v.IntVal == 0
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(v, 100, false)
	return err == nil && n == 0
}

func (c *checker) statefulSet(ss *appsv1.StatefulSet) {
	s := &ss.Spec
	c.nonNegative("spec.replicas", s.Replicas)
	c.podSelector("spec.selector", s.Selector, s.Template.Labels, "spec.template.metadata.labels")

	if s.ServiceName == "" {
		c.errorf("spec.serviceName", "serviceName is required: the headless Service that gives the pods their stable DNS names")
	} else if c.get("", "Service", s.ServiceName) == nil {
		c.warnf("spec.serviceName", "Service %q not found in namespace %s: the pods have no DNS names until it exists", s.ServiceName, c.o.Namespace)
	}
	oneOf(c, "spec.podManagementPolicy", s.PodManagementPolicy, appsv1.OrderedReadyPodManagement, appsv1.ParallelPodManagement)
	u := s.UpdateStrategy
	if oneOf(c, "spec.updateStrategy.type", u.Type, appsv1.RollingUpdateStatefulSetStrategyType, appsv1.OnDeleteStatefulSetStrategyType) {
		if u.Type == appsv1.OnDeleteStatefulSetStrategyType && u.RollingUpdate != nil {
			c.errorf("spec.updateStrategy.rollingUpdate", "rollingUpdate must not be set when the update strategy type is OnDelete")
		}
		if u.RollingUpdate != nil {
			c.nonNegative("spec.updateStrategy.rollingUpdate.partition", u.RollingUpdate.Partition)
		}
	}
	if r := s.PersistentVolumeClaimRetentionPolicy; r != nil {
		oneOf(c, "spec.persistentVolumeClaimRetentionPolicy.whenDeleted", r.WhenDeleted, appsv1.RetainPersistentVolumeClaimRetentionPolicyType, appsv1.DeletePersistentVolumeClaimRetentionPolicyType)
		oneOf(c, "spec.persistentVolumeClaimRetentionPolicy.whenScaled", r.WhenScaled, appsv1.RetainPersistentVolumeClaimRetentionPolicyType, appsv1.DeletePersistentVolumeClaimRetentionPolicyType)
	}

	claims := map[string]bool{}
	for i := range s.VolumeClaimTemplates {
		t := &s.VolumeClaimTemplates[i]
		p := fmt.Sprintf("spec.volumeClaimTemplates[%d]", i)
		switch {
		case t.Name == "":
			c.errorf(p+".metadata.name", "a claim template name is required")
		case c.invalid(p+".metadata.name", "claim template name", t.Name, content.IsDNS1123Label(t.Name)):
		case claims[t.Name]:
			c.errorf(p+".metadata.name", "claim template name %q is used twice", t.Name)
		default:
			claims[t.Name] = true
		}
		c.labels(p+".metadata.labels", t.Labels)
		c.pvcSpec(&t.Spec, p+".spec")
	}
	c.template(&s.Template, "spec.template", podContext{restartPolicies: serviceRestartPolicies, claims: claims})
}

func (c *checker) daemonSet(ds *appsv1.DaemonSet) {
	s := &ds.Spec
	c.podSelector("spec.selector", s.Selector, s.Template.Labels, "spec.template.metadata.labels")
	c.template(&s.Template, "spec.template", podContext{restartPolicies: serviceRestartPolicies})
	u := s.UpdateStrategy
	if oneOf(c, "spec.updateStrategy.type", u.Type, appsv1.RollingUpdateDaemonSetStrategyType, appsv1.OnDeleteDaemonSetStrategyType) &&
		u.Type == appsv1.RollingUpdateDaemonSetStrategyType && u.RollingUpdate != nil {
		c.rollingUpdate("spec.updateStrategy.rollingUpdate", u.RollingUpdate.MaxSurge, u.RollingUpdate.MaxUnavailable)
	}
}

// Restart policies of pods a controller owns: a long-running workload's
// pods always restart, a Job's run to completion.
var (
	serviceRestartPolicies = []corev1.RestartPolicy{corev1.RestartPolicyAlways}
	jobRestartPolicies     = []corev1.RestartPolicy{corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever}
)

func (c *checker) job(j *batchv1.Job) {
	c.jobSpec(&j.Spec, "spec")
}

// jobSpec checks a Job's spec, or a CronJob's job template at p.
func (c *checker) jobSpec(s *batchv1.JobSpec, p string) {
	c.nonNegative(p+".parallelism", s.Parallelism)
	c.nonNegative(p+".completions", s.Completions)
	c.nonNegative(p+".backoffLimit", s.BackoffLimit)
	if s.ActiveDeadlineSeconds != nil && *s.ActiveDeadlineSeconds <= 0 {
		c.errorf(p+".activeDeadlineSeconds", "activeDeadlineSeconds must be more than 0")
	}
	if s.CompletionMode != nil && oneOf(c, p+".completionMode", *s.CompletionMode, batchv1.NonIndexedCompletion, batchv1.IndexedCompletion) &&
		*s.CompletionMode == batchv1.IndexedCompletion && s.Completions == nil {
		c.errorf(p+".completions", "completions is required when completionMode is Indexed")
	}
	switch {
	case s.ManualSelector != nil && *s.ManualSelector:
		c.podSelector(p+".selector", s.Selector, s.Template.Labels, p+".template.metadata.labels")
	case s.Selector != nil:
		c.errorf(p+".selector", "a Job's selector is generated: remove it, or set manualSelector: true to use this one")
	}
	c.template(&s.Template, p+".template", podContext{restartPolicies: jobRestartPolicies})
}

// cronJobNameMax is the longest CronJob name: its Jobs add 11 characters
// and must still fit a label value.
const cronJobNameMax = 52

func (c *checker) cronJob(cj *batchv1.CronJob) {
	s := &cj.Spec
	c.schedule("spec.schedule", s.Schedule)
	if tz := s.TimeZone; tz != nil {
		switch {
		case *tz == "":
			c.errorf("spec.timeZone", "timeZone must not be empty: remove it to use the controller's time zone")
		case strings.EqualFold(*tz, "Local"):
			c.errorf("spec.timeZone", "timeZone must name a time zone of the IANA database (Europe/Berlin), not Local")
		default:
			if _, err := time.LoadLocation(*tz); err != nil {
				c.errorf("spec.timeZone", "unknown time zone %q: use a name of the IANA database, such as Europe/Berlin", *tz)
			}
		}
	}
	oneOf(c, "spec.concurrencyPolicy", s.ConcurrencyPolicy, batchv1.AllowConcurrent, batchv1.ForbidConcurrent, batchv1.ReplaceConcurrent)
	if s.StartingDeadlineSeconds != nil && *s.StartingDeadlineSeconds < 0 {
		c.errorf("spec.startingDeadlineSeconds", "%d must not be negative", *s.StartingDeadlineSeconds)
	}
	c.nonNegative("spec.successfulJobsHistoryLimit", s.SuccessfulJobsHistoryLimit)
	c.nonNegative("spec.failedJobsHistoryLimit", s.FailedJobsHistoryLimit)
	c.labels("spec.jobTemplate.metadata.labels", s.JobTemplate.Labels)
	c.annotations("spec.jobTemplate.metadata.annotations", s.JobTemplate.Annotations)
	c.jobSpec(&s.JobTemplate.Spec, "spec.jobTemplate.spec")
}

// schedule checks a cron schedule the way Kubernetes reads it: five
// fields or a descriptor (@daily, @every 1h), with no time zone in it.
func (c *checker) schedule(p, s string) {
	switch {
	case strings.TrimSpace(s) == "":
		c.errorf(p, "a schedule is required, such as \"0 2 * * *\" or @daily")
	case strings.Contains(s, "TZ"):
		c.errorf(p, "a time zone in the schedule (CRON_TZ= or TZ=) is not supported: set spec.timeZone instead")
	default:
		if _, err := cron.ParseStandard(s); err != nil {
			c.errorf(p, "invalid schedule %q: %v", s, err)
		}
	}
}

func (c *checker) hpa(h *autoscalingv2.HorizontalPodAutoscaler) {
	s := &h.Spec
	ref := s.ScaleTargetRef
	const rp = "spec.scaleTargetRef"
	if ref.APIVersion != "" && ref.APIVersion != "apps/v1" {
		c.errorf(rp+".apiVersion", "unsupported apiVersion %q: berth scales apps/v1 Deployments and StatefulSets", ref.APIVersion)
	}
	switch {
	case ref.Kind != "Deployment" && ref.Kind != "StatefulSet":
		c.errorf(rp+".kind", "berth scales Deployments and StatefulSets, not %q", ref.Kind)
	case ref.Name == "":
		c.errorf(rp+".name", "the name of the %s to scale is required", ref.Kind)
	case c.get("apps", ref.Kind, ref.Name) == nil:
		c.errorf(rp+".name", "%s %q not found in namespace %s", ref.Kind, ref.Name, c.o.Namespace)
	}
	if s.MaxReplicas < 1 {
		c.errorf("spec.maxReplicas", "maxReplicas must be at least 1")
	}
	if m := s.MinReplicas; m != nil {
		switch {
		case *m < 1:
			c.errorf("spec.minReplicas", "minReplicas must be at least 1")
		case s.MaxReplicas >= 1 && *m > s.MaxReplicas:
			c.errorf("spec.minReplicas", "minReplicas (%d) is more than maxReplicas (%d)", *m, s.MaxReplicas)
		}
	}
}
