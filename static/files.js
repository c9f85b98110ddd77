// The file manager's uploader: drag and drop, one request per file, a progress bar for each.
// Without JavaScript the form posts every chosen file in one request instead.
(() => {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = document.getElementById("file-input");
  const dropzone = document.getElementById("dropzone");
  const list = document.getElementById("upload-progress");
  const maxBytes = Number(form.dataset.maxBytes);

  function formatMegabytes(bytes) {
    return (bytes / (1024 * 1024)).toFixed(1) + " MB";
  }

  function addRow(file) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "upload-name";
    name.textContent = file.name;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    const status = document.createElement("span");
    status.className = "upload-status muted";
    item.append(name, bar, status);
    list.append(item);
    return { item, bar, status };
  }

  function upload(file) {
    const row = addRow(file);
    if (file.size > maxBytes) {
      row.status.textContent = `Too large: ${formatMegabytes(file.size)}, the limit is ${formatMegabytes(maxBytes)}.`;
      row.item.classList.add("upload-failed");
      return Promise.resolve(false);
    }
    const body = new FormData();
    body.append("csrf_token", form.elements.csrf_token.value);
    body.append("folder_id", form.elements.folder_id.value);
    body.append("file", file, file.name);
    return new Promise((resolve) => {
      const request = new XMLHttpRequest();
      request.open("POST", form.action);
      request.setRequestHeader("Accept", "application/json");
      request.setRequestHeader("X-CSRFToken", form.elements.csrf_token.value);
      request.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) row.bar.value = Math.round((event.loaded * 100) / event.total);
      });
      request.addEventListener("load", () => {
        if (request.status === 201) {
          row.bar.value = 100;
          row.status.textContent = "Uploaded";
          row.item.classList.add("upload-done");
          resolve(true);
          return;
        }
        let message = `Upload failed (HTTP ${request.status}).`;
        try {
          message = JSON.parse(request.responseText).error.message;
        } catch (error) {
          // Not the JSON error envelope: keep the generic message.
        }
        row.status.textContent = message;
        row.item.classList.add("upload-failed");
        resolve(false);
      });
      request.addEventListener("error", () => {
        row.status.textContent = "Upload failed: the connection was lost.";
        row.item.classList.add("upload-failed");
        resolve(false);
      });
      request.send(body);
    });
  }

  async function uploadAll(files) {
    const results = await Promise.all(Array.from(files).map(upload));
    input.value = "";
    if (results.some(Boolean) && window.htmx) {
      window.htmx.ajax("GET", window.location.href, { target: "#file-listing", swap: "innerHTML" });
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.files.length) uploadAll(input.files);
  });
  input.addEventListener("change", () => {
    if (input.files.length) uploadAll(input.files);
  });
  ["dragenter", "dragover"].forEach((name) =>
    dropzone.addEventListener(name, (event) => {
      event.preventDefault();
      dropzone.classList.add("dropzone-active");
    }),
  );
  ["dragleave", "drop"].forEach((name) =>
    dropzone.addEventListener(name, () => dropzone.classList.remove("dropzone-active")),
  );
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer.files.length) uploadAll(event.dataTransfer.files);
  });
})();
