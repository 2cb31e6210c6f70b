// The owner's setup page: the token stays in the URL fragment (never sent to the server in a URL or a
// Referer), is posted once with the form, and is wiped from the address bar.
"use strict";

(function () {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  const form = document.getElementById("setup");
  const problem = document.getElementById("problem");
  if (!token) {
    form.hidden = true;
    document.getElementById("nolink").hidden = false;
    return;
  }
  history.replaceState(null, "", location.pathname);

  function say(text) {
    problem.textContent = text;
    problem.hidden = false;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    problem.hidden = true;
    const data = new FormData(form);
    if (data.get("password") !== data.get("again")) {
      say("The two passwords differ: type the same one twice.");
      return;
    }
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const answer = await fetch("/api/v1/setup", {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        credentials: "same-origin",
        body: JSON.stringify({
          token: token,
          email: data.get("email"),
          display_name: data.get("display_name"),
          password: data.get("password"),
        }),
      });
      const body = await answer.json().catch(function () { return {}; });
      if (answer.status === 201) {
        form.hidden = true;
        document.getElementById("who").textContent = data.get("email");
        document.getElementById("done").hidden = false;
        return;
      }
      // problem+json: what is wrong, and the hint says what to do.
      say([body.detail || ("The server answered " + answer.status + "."), body.hint].filter(Boolean).join(" — "));
    } catch (error) {
      say("The server could not be reached: is cosmogen serve still running?");
    } finally {
      button.disabled = false;
    }
  });
})();
