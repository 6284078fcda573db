package network

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/render"
	"berth.dev/berth/render/api/v1alpha1"
)

// annotationIngressClass is the class annotation older Ingresses use.
const annotationIngressClass = "kubernetes.io/ingress.class"

// ingress merges every Ingress of the served class into the one Ingress
// all ingress machines serve, and marks those machines. It returns nil
// when no machine serves Ingresses.
func (s *state) ingress() *api.Ingress {
	spec := &s.cluster.Spec.Ingress
	class := cmp.Or(spec.ClassName, v1alpha1.DefaultIngressClass)
	var sel labels.Selector
	if spec.MachineSelector != nil {
		var err error
		if sel, err = metav1.LabelSelectorAsSelector(spec.MachineSelector); err != nil {
			s.clusterDiag(render.SeverityError, "spec.ingress.machineSelector", "invalid selector: no machine serves Ingresses: %v", err)
			sel = nil
		}
	}
	machines := 0
	for _, m := range s.machines {
		if sel != nil && sel.Matches(labels.Set(m.spec.Labels)) {
			m.ingress = true
			machines++
		}
	}
	out := &api.Ingress{HTTPPort: spec.HTTPPort, HTTPSPort: spec.HTTPSPort}
	var defaultFrom *render.Object
	var ingresses []*render.Object
	for _, o := range s.d.Objects {
		if ing, ok := o.Obj.(*networkingv1.Ingress); ok && served(ing, class, spec.Default) {
			ingresses = append(ingresses, o)
		}
	}
	slices.SortFunc(ingresses, func(a, b *render.Object) int { return a.Key().Compare(b.Key()) })
	for _, o := range ingresses {
		ing := o.Obj.(*networkingv1.Ingress)
		if machines == 0 {
			s.diag(render.SeverityWarning, o, "spec", "no machine serves Ingresses of class %s: set the Cluster's spec.ingress.machineSelector", class)
			continue
		}
		src := o.Namespace + "/" + o.Name
		if b := ing.Spec.DefaultBackend; b != nil {
			if defaultFrom != nil {
				s.diag(render.SeverityWarning, o, "spec.defaultBackend", "defaultBackend is not used: %s's is (the first Ingress with one, by namespace and name)", defaultFrom.Ref())
			} else if be, ok := s.backend(o, "spec.defaultBackend", b); ok {
				out.DefaultBackend, defaultFrom = &be, o
			}
		}
		for i, r := range ing.Spec.Rules {
			if r.HTTP == nil {
				continue
			}
			rule := api.IngressRule{Source: src, Host: r.Host}
			for j, p := range r.HTTP.Paths {
				field := fmt.Sprintf("spec.rules[%d].http.paths[%d]", i, j)
				be, ok := s.backend(o, field+".backend", &p.Backend)
				if !ok {
					continue
				}
				pt := networkingv1.PathTypeImplementationSpecific
				if p.PathType != nil {
					pt = *p.PathType
				}
				rule.Paths = append(rule.Paths, api.IngressPath{Path: cmp.Or(p.Path, "/"), PathType: string(pt), Backend: be})
			}
			if len(rule.Paths) > 0 {
				out.Rules = append(out.Rules, rule)
			}
		}
		for i, t := range ing.Spec.TLS {
			if tls, ok := s.tls(o, fmt.Sprintf("spec.tls[%d]", i), t); ok {
				out.TLS = append(out.TLS, tls)
			}
		}
	}
	if machines == 0 {
		return nil
	}
	return out
}

// served reports whether an Ingress is of the class berth serves.
func served(ing *networkingv1.Ingress, class string, byDefault bool) bool {
	name := ""
	if ing.Spec.IngressClassName != nil {
		name = *ing.Spec.IngressClassName
	} else {
		name = ing.Annotations[annotationIngressClass]
	}
	if name == "" {
		return byDefault
	}
	return name == class
}

// backend resolves a Service backend to the ready endpoints of its port.
// ok is false when the path cannot be served at all; a missing Service or
// port gives a backend without endpoints (503), as ingress controllers do.
func (s *state) backend(o *render.Object, field string, b *networkingv1.IngressBackend) (api.IngressBackend, bool) {
	bs := b.Service
	if bs == nil {
		s.diag(render.SeverityError, o, field, "only Service backends are served: the path is left out")
		return api.IngressBackend{}, false
	}
	port := bs.Port.Name
	if port == "" {
		port = strconv.Itoa(int(bs.Port.Number))
	}
	out := api.IngressBackend{Service: o.Namespace + "/" + bs.Name + ":" + port, Endpoints: []netip.AddrPort{}}
	sv := s.svcByKey[o.Namespace+"/"+bs.Name]
	if sv == nil {
		s.diag(render.SeverityError, o, field+".service.name", "Service %s not found: requests get 503", bs.Name)
		return out, true
	}
	if sv.svc.Spec.Type == corev1.ServiceTypeExternalName {
		s.diag(render.SeverityError, o, field+".service.name", "Service %s is of type ExternalName, which berth does not proxy to: requests get 503", bs.Name)
		return out, true
	}
	i := slices.IndexFunc(sv.svc.Spec.Ports, func(p corev1.ServicePort) bool {
		if bs.Port.Name != "" {
			return p.Name == bs.Port.Name
		}
		return p.Port == bs.Port.Number
	})
	if i < 0 {
		s.diag(render.SeverityError, o, field+".service.port", "Service %s has no port %s: requests get 503", bs.Name, port)
		return out, true
	}
	sp := sv.out.Ports[i]
	for _, ep := range sv.out.Endpoints {
		if !ep.Ready || ep.Terminating {
			continue
		}
		for _, epp := range ep.Ports {
			if epp.Name == sp.Name && epp.Protocol == sp.Protocol {
				out.Endpoints = append(out.Endpoints, netip.AddrPortFrom(ep.IP, uint16(epp.Port)))
			}
		}
	}
	slices.SortFunc(out.Endpoints, netip.AddrPort.Compare)
	out.Endpoints = slices.Compact(out.Endpoints)
	return out, true
}

// tls reads the certificate of one spec.tls entry from its
// kubernetes.io/tls Secret. Without it, the hosts are served over HTTP.
func (s *state) tls(o *render.Object, field string, t networkingv1.IngressTLS) (api.IngressTLS, bool) {
	if t.SecretName == "" {
		s.diag(render.SeverityWarning, o, field, "no secretName: berth has no default certificate, so these hosts are served over HTTP only")
		return api.IngressTLS{}, false
	}
	so := s.d.Get(render.Key{Kind: "Secret", Namespace: o.Namespace, Name: t.SecretName})
	if so == nil {
		s.diag(render.SeverityError, o, field+".secretName", "Secret %s not found: these hosts are served over HTTP only", t.SecretName)
		return api.IngressTLS{}, false
	}
	sec := so.Obj.(*corev1.Secret)
	if sec.Type != corev1.SecretTypeTLS {
		s.diag(render.SeverityError, o, field+".secretName", "Secret %s is of type %s, not %s: these hosts are served over HTTP only", t.SecretName, sec.Type, corev1.SecretTypeTLS)
		return api.IngressTLS{}, false
	}
	cert, key := secretValue(sec, corev1.TLSCertKey), secretValue(sec, corev1.TLSPrivateKeyKey)
	if len(cert) == 0 || len(key) == 0 {
		s.diag(render.SeverityError, o, field+".secretName", "Secret %s lacks %s or %s: these hosts are served over HTTP only", t.SecretName, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
		return api.IngressTLS{}, false
	}
	return api.IngressTLS{
		Source: o.Namespace + "/" + t.SecretName,
		Hosts:  slices.Clone(t.Hosts),
		Cert:   api.Sensitive(slices.Clone(cert)),
		Key:    api.Sensitive(slices.Clone(key)),
	}, true
}

// secretValue is one key of a Secret; stringData wins over data, as the
// API server merges them.
func secretValue(sec *corev1.Secret, k string) []byte {
	if v, ok := sec.StringData[k]; ok {
		return []byte(v)
	}
	return sec.Data[k]
}
