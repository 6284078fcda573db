package workload

import (
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
)

func (p *pass) statefulSet(d *appsv1.StatefulSet, ns, name string) Workload { return Workload{} }
func (p *pass) daemonSet(d *appsv1.DaemonSet, ns, name string) Workload     { return Workload{} }
func (p *pass) job(s *batchv1.JobSpec, owner Owner, extra map[string]string) Workload {
	return Workload{}
}
func (p *pass) cronJob(c *batchv1.CronJob, ns, name string) []Workload { return nil }
