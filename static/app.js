// Small behaviours that pages share. No inline scripts: pages opt in with data attributes.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy-target]");
  if (!button) return;
  const target = document.querySelector(button.dataset.copyTarget);
  if (target && navigator.clipboard) navigator.clipboard.writeText(target.textContent.trim());
});
