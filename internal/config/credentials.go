package config

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Warnings are what a valid config leaves weaker than it could be: how the
// kubeconfigs keep and send their credentials, and a cluster whose
// endpoints are open to other machines without endpoint_cidrs. None stops
// the daemon; check-config prints them and the daemon logs them at start
// and at reload. No message quotes a credential: a token never reaches a
// terminal or the journal from here.
func (c *Config) Warnings() []string {
	var out []string
	for _, cl := range c.Clusters {
		who := fmt.Sprintf("cluster %q", cl.Name)
		for _, w := range kubeconfigWarnings(cl) {
			out = append(out, who+": "+w)
		}
		if len(cl.EndpointCIDRs) > 0 {
			continue
		}
		if cl.ServeNodePorts {
			out = append(out, who+": endpoint_cidrs is empty while serve_node_ports = true: whoever reaches this host's node ports "+
				"reaches any address the cluster names as an endpoint, beyond the few this host always refuses; "+
				"endpoint_cidrs, set to the cluster's pod and node networks, is the strong control")
		}
		if len(c.RoutedClients) > 0 {
			out = append(out, who+": endpoint_cidrs is empty while routed_clients is set: the routed clients reach any address "+
				"the cluster names as an endpoint, as this host, beyond the few this host always refuses; "+
				"endpoint_cidrs, set to the cluster's pod and node networks, is the strong control")
		}
	}
	return out
}

// kubeconfigWarnings reads cl's kubeconfig again; Load found it valid, so a
// file that changed since is only left unchecked.
func kubeconfigWarnings(cl Cluster) []string {
	var out []string
	if w := modeWarning("kubeconfig", cl.Kubeconfig); w != "" {
		out = append(out, w)
	}
	kc, err := clientcmd.LoadFromFile(cl.Kubeconfig)
	if err != nil {
		return out
	}
	ctx := kc.Contexts[cl.ContextName]
	if ctx == nil {
		return out
	}
	if server := kc.Clusters[ctx.Cluster]; server != nil {
		if server.InsecureSkipTLSVerify {
			out = append(out, fmt.Sprintf("kubeconfig %s: cluster %q sets insecure-skip-tls-verify: whoever is on the way to the apiserver "+
				"can pose as it and decide what this host programs; give certificate-authority-data instead", cl.Kubeconfig, ctx.Cluster))
		}
		if strings.HasPrefix(strings.ToLower(server.Server), "http://") {
			out = append(out, fmt.Sprintf("kubeconfig %s: server %s is plain http: the credentials and every object travel unencrypted "+
				"and unauthenticated; use https", cl.Kubeconfig, server.Server))
		}
	}
	if user := kc.AuthInfos[ctx.AuthInfo]; user != nil {
		out = append(out, userWarnings(cl.Kubeconfig, ctx.AuthInfo, user)...)
	}
	return out
}

func userWarnings(path, name string, user *clientcmdapi.AuthInfo) []string {
	var out []string
	// Only the command: its arguments and environment may hold secrets.
	if user.Exec != nil {
		out = append(out, fmt.Sprintf("kubeconfig %s: user %q runs the exec credential plugin %q whenever it needs a token, as root with "+
			"the daemon's privileges: whoever can change that program or this file runs code on this host; a ServiceAccount token "+
			"in tokenFile needs no program", path, name, user.Exec.Command))
	}
	if user.Token != "" {
		out = append(out, fmt.Sprintf("kubeconfig %s: user %q has its token written inline: put it in a file only root can read and "+
			"name that file with tokenFile, so that the kubeconfig holds no secret and the token is rotated by replacing one file", path, name))
	}
	// Files the kubeconfig names are relative to its own directory.
	for _, f := range []struct{ key, file string }{{"tokenFile", user.TokenFile}, {"client-key", user.ClientKey}} {
		key, file := f.key, f.file
		if file == "" {
			continue
		}
		if !filepath.IsAbs(file) {
			file = filepath.Join(filepath.Dir(path), file)
		}
		if w := modeWarning(fmt.Sprintf("kubeconfig %s: user %q: %s", path, name, key), file); w != "" {
			out = append(out, w)
		}
	}
	return out
}

// modeWarning says whether a credential file is readable or writable by
// anyone but its owner: readable gives the credential away, writable lets
// someone point the daemon at another apiserver or plugin.
func modeWarning(what, path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	perm := fi.Mode().Perm()
	var who []string
	for _, c := range []struct {
		bits fs.FileMode
		text string
	}{{0o040, "readable by its group"}, {0o020, "writable by its group"}, {0o004, "readable by others"}, {0o002, "writable by others"}} {
		if perm&c.bits != 0 {
			who = append(who, c.text)
		}
	}
	if len(who) == 0 {
		return ""
	}
	return fmt.Sprintf("%s %s is %s (mode %04o): it holds the cluster's credentials; chmod 600 %s",
		what, path, strings.Join(who, ", "), perm, path)
}
