// mockoidc: a real OIDC provider for the sign-in proxy's tests (github.com/oauth2-proxy/mockoidc,
// a library, started here). It listens on 127.0.0.1:<port> only, signs in every authorization
// request as the one configured user, and prints its issuer URL on the first line of stdout.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/oauth2-proxy/mockoidc"
)

func main() {
	port := flag.Int("port", 0, "port on 127.0.0.1 (0: any free one)")
	clientID := flag.String("client-id", "optiinfra-test", "the client id the relying party uses")
	clientSecret := flag.String("client-secret", "", "the client secret the relying party uses (required)")
	email := flag.String("email", "jane.doe@example.com", "the signed-in user's verified email")
	groups := flag.String("groups", "", "the user's groups, comma-separated")
	flag.Parse()
	if *clientSecret == "" {
		log.Fatal("mockoidc: -client-secret is required")
	}
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		log.Fatal(err)
	}
	m.ClientID, m.ClientSecret = *clientID, *clientSecret
	user := &mockoidc.MockUser{Subject: "sub-" + *email, Email: *email, EmailVerified: true,
		PreferredUsername: strings.Split(*email, "@")[0]}
	if *groups != "" {
		user.Groups = strings.Split(*groups, ",")
	}
	// Every authorization request signs in as the configured user.
	if err := m.AddMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, mockoidc.AuthorizationEndpoint) {
				m.QueueUser(user)
			}
			next.ServeHTTP(w, r)
		})
	}); err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Start(ln, nil); err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Issuer())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	_ = m.Shutdown()
}
