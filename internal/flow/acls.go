package flow

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"os"
	"time"

	"github.com/kmirror/kmirror/internal/aclsync"
	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/retry"
)

// aclErrorRepeat is how often a failure of ACL sync that stays the same
// is logged again.
const aclErrorRepeat = 10 * time.Minute

// syncACLs keeps the target's topic and group ACLs in step with the
// source's, as the flow's acls setting says, every topic refresh interval
// until ctx ends. A failing pass is logged once (again when its error
// changes, or after aclErrorRepeat), counted, and tried again at the next
// interval; replication is not held up.
func (r *run) syncACLs(ctx context.Context) {
	own := ownPrincipal(r.target)
	if own == "" {
		r.logger.Warn("ACL sync cannot tell kmirror's own principal on the target from the configuration; "+
			"ACLs naming it are not protected from sync", "target", r.cfg.Target)
	}
	store := aclsync.NewStore(r.meta, aclsync.StateTopic(r.cfg.Name)).WithAccess(kafka.AccessOf(r.target))
	syncer := aclsync.New(aclsync.Options{
		Source: r.srcAdmin, Target: r.tgtAdmin,
		Rules:             aclsync.RulesOf(r.cfg, r.naming, own),
		Store:             store,
		ReplicationFactor: r.cfg.ReplicationFactor,
		SourceAccess:      kafka.AccessOf(r.source), TargetAccess: kafka.AccessOf(r.target),
	})
	var lastErr string
	errLog := retry.Throttle{Every: aclErrorRepeat}
	failedACL := map[aclsync.Binding]string{}
	logged := false
	t := time.NewTicker(r.cfg.TopicRefreshInterval)
	defer t.Stop()
	for {
		passCtx, cancel := context.WithTimeout(ctx, r.target.RequestTimeout+30*time.Second)
		rep, err := syncer.Sync(passCtx)
		cancel()
		r.aclPassDone(rep, err == nil)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			r.metrics.Errors.WithLabelValues(r.cfg.Name, metrics.ErrACLSync).Inc()
			again := errLog.Allow() // starts the interval at the first line too
			key := err.Error()
			if errors.Is(err, aclsync.ErrNoAuthorizer) {
				key = "no authorizer" // the same fault whatever request met it
			}
			if key != lastErr || again {
				lastErr = key
				r.logger.Error("ACL sync failed; retrying", "retry_in", r.cfg.TopicRefreshInterval.String(), "err", err)
			}
		default:
			if lastErr != "" {
				r.logger.Info("ACL sync works again")
				lastErr = ""
			}
			if !logged {
				logged = true
				r.logger.Info("ACL sync running", "mode", r.cfg.ACLs, "state_topic", store.Topic(),
					"acls_in_step", rep.Synced, "created", len(rep.Created), "deleted", len(rep.Deleted))
			}
		}
		failing := map[aclsync.Binding]string{}
		for _, f := range rep.Failed {
			r.metrics.Errors.WithLabelValues(r.cfg.Name, metrics.ErrACLSync).Inc()
			msg := f.Err.Error()
			failing[f.Binding] = msg
			if failedACL[f.Binding] != msg {
				r.logger.Error("ACL sync could not "+f.Op+" an ACL on the target; retrying", "acl", f.Binding.String(), "err", f.Err)
			}
		}
		failedACL = failing
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// aclLogMax bounds the ACL changes of one pass logged one by one; more
// are logged as a count.
const aclLogMax = 20

// aclPassDone logs and counts the changes of an ACL sync pass, complete
// or not.
func (r *run) aclPassDone(rep aclsync.Report, complete bool) {
	for i, b := range rep.Created {
		if i == aclLogMax {
			r.logger.Info("more ACLs created on the target", "count", len(rep.Created)-i)
			break
		}
		r.logger.Info("ACL created on the target", "acl", b.String())
	}
	for i, b := range rep.Deleted {
		if i == aclLogMax {
			r.logger.Info("more ACLs deleted on the target", "count", len(rep.Deleted)-i)
			break
		}
		r.logger.Info("ACL deleted on the target: its source ACL is gone", "acl", b.String())
	}
	if n := len(rep.Created); n > 0 {
		r.metrics.ACLChanges.WithLabelValues(r.cfg.Name, "create").Add(float64(n))
	}
	if n := len(rep.Deleted); n > 0 {
		r.metrics.ACLChanges.WithLabelValues(r.cfg.Name, "delete").Add(float64(n))
	}
	if complete {
		r.metrics.ACLsSynced.WithLabelValues(r.cfg.Name).Set(float64(rep.Synced))
	}
}

// ownPrincipal is the principal the brokers of c see kmirror as, as far
// as the configuration tells: User:<username> with PLAIN or SCRAM,
// User:<certificate subject> with a client certificate and no SASL (the
// brokers' default principal builder), User:ANONYMOUS with neither; ""
// when only the broker knows it (OAUTHBEARER, AWS_MSK_IAM, an unreadable
// certificate).
func ownPrincipal(c *config.Cluster) string {
	switch {
	case c.SASL != nil && c.SASL.Username != "":
		return "User:" + c.SASL.Username
	case c.SASL != nil:
		return ""
	case c.TLS != nil && c.TLS.Enabled && c.TLS.CertFile != "":
		return certPrincipal(c.TLS.CertFile)
	}
	return "User:ANONYMOUS"
}

// certPrincipal returns User:<subject> of the first certificate of the
// PEM file at path, the subject in RFC 2253 form as Kafka names it, or ""
// if it cannot be read.
func certPrincipal(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return ""
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return ""
		}
		var subject pkix.RDNSequence
		if _, err := asn1.Unmarshal(cert.RawSubject, &subject); err != nil {
			return ""
		}
		return "User:" + subject.String()
	}
}
