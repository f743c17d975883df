/* The pod sandbox's process: holds the pod's namespaces open and does nothing else.
 *
 * The real node's containerd runs it as every pod's sandbox (its `sandbox_image`), built
 * statically (`gcc -static`) into a FROM scratch image, because nothing can be pulled from a
 * registry on the test machines. It exits on SIGTERM or SIGINT, and reaps the zombies that a
 * pod sharing its process namespace would leave to it. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signal) {
    (void)signal;
    _exit(0);
}

static void reap(int signal) {
    (void)signal;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction on_stop = {.sa_handler = stop};
    struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
    if (sigaction(SIGTERM, &on_stop, NULL) < 0 || sigaction(SIGINT, &on_stop, NULL) < 0 ||
        sigaction(SIGCHLD, &on_child, NULL) < 0) {
        return 1;
    }
    for (;;) {
        pause();
    }
}
