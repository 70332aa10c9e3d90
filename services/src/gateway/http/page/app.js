// The reference frontend for the userctl HTTP/JSON API: register, log in, show the profile.
//
// Every answer is an envelope: {"Result": ..., "Error": null} on success, or
// {"Result": null, "Error": {"Code", "Message", "Fields"?}} on failure, where "Fields" names
// the reason per request member so a form can show it beside the input.
//
// The token is kept in this variable only: never in localStorage or a cookie, where other
// scripts or other requests could pick it up. Reloading the page logs out.
"use strict";

let token = null;

/** A failure the API answered with, or a network failure (Code "NETWORK"). */
class ApiError extends Error {
  constructor(code, message, fields) {
    super(message);
    this.code = code;
    this.fields = fields || {};
  }
}

/** Calls the API; resolves to the envelope's Result, rejects with an ApiError. */
async function call(method, path, { body, bearer } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (bearer) headers["Authorization"] = `Bearer ${bearer}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (failure) {
    throw new ApiError("NETWORK", `Could not reach the API: ${failure.message}`);
  }
  let envelope;
  try {
    envelope = await response.json();
  } catch {
    throw new ApiError("BAD_RESPONSE", `The API answered ${response.status} without a JSON envelope.`);
  }
  if (envelope.Error) {
    throw new ApiError(envelope.Error.Code, envelope.Error.Message, envelope.Error.Fields);
  }
  return envelope.Result;
}

/** The form's inputs as the JSON object the API expects: {"Email": ..., "Password": ...}. */
function values(form) {
  return Object.fromEntries(new FormData(form));
}

function clearErrors(form) {
  for (const slot of form.querySelectorAll("[data-error-for]")) slot.textContent = "";
  for (const input of form.querySelectorAll("input")) input.removeAttribute("aria-invalid");
  say(form, "", "");
}

/** Shows the envelope's per-field reasons beside their inputs and its message below. */
function showError(form, error) {
  for (const [field, reason] of Object.entries(error.fields)) {
    const slot = form.querySelector(`[data-error-for="${field}"]`);
    const input = form.querySelector(`input[name="${field}"]`);
    if (slot) slot.textContent = reason;
    if (input) input.setAttribute("aria-invalid", "true");
  }
  say(form, error.message, "error");
}

function say(form, text, kind) {
  const message = form.querySelector(".message");
  message.textContent = text;
  message.className = `message ${kind}`.trim();
}

/** Runs `action` for the form's values on submit, showing any ApiError in the form. */
function onSubmit(form, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      await action(values(form));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showError(form, error);
    } finally {
      button.disabled = false;
    }
  });
}

function showProfile(user, expires) {
  document.getElementById("profile-id").textContent = user.ID;
  document.getElementById("profile-full-name").textContent = user.FullName;
  document.getElementById("profile-email").textContent = user.Email;
  document.getElementById("profile-expires").textContent = expires;
  document.getElementById("profile").hidden = false;
}

const registerForm = document.getElementById("register");
const loginForm = document.getElementById("login");

onSubmit(registerForm, async (registration) => {
  const user = await call("POST", "/api/auth/register", { body: registration });
  say(registerForm, `Registered ${user.Email}. Log in below.`, "ok");
  loginForm.elements.Email.value = user.Email;
  loginForm.elements.Password.focus();
});

onSubmit(loginForm, async (credentials) => {
  const login = await call("POST", "/api/auth/login", { body: credentials });
  token = login.Token;
  const user = await call("GET", "/api/auth/user-profile", { bearer: token });
  say(loginForm, `Logged in as ${user.Email}.`, "ok");
  showProfile(user, login.Expired);
});

document.getElementById("logout").addEventListener("click", () => {
  token = null;
  document.getElementById("profile").hidden = true;
  say(loginForm, "Logged out.", "ok");
});
