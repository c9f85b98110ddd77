// Small behaviours that pages share. No inline scripts: pages opt in with data attributes.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy-target]");
  if (!button) return;
  const target = document.querySelector(button.dataset.copyTarget);
  if (target && navigator.clipboard) navigator.clipboard.writeText(target.textContent.trim());
});

// A form with data-confirm shows a confirmation dialog before it is sent, for irreversible actions.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});
